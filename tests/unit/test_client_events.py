"""Phoenix's idiom through the ASGI app in process: a topic handler with ``client_events`` takes
``channel.push("new_msg", {...})`` and broadcasts what ``handle_in`` returns; ``topics:*``
keeps the seed's ``publish`` with ``[event, payload]``. The handler is the demo's
(``dps_site.chat.ChatRoom``, the code docs/handlers.md shows)."""
from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from dps_site.asgi import application
from tests.support.markers import assert_marker_is_next
from topics.hooks.handlers import Reply, TopicHandler, topic_routes

OK = {"status": "ok", "response": {}}
PATH = "/socket/websocket?vsn=2.0.0"


def error(reason: str) -> dict:
    return {"status": "error", "response": {"reason": reason}}


class QuietRoom(TopicHandler):
    """Takes client events and answers them without a broadcast (Phoenix's ``{:reply, ...}``)."""

    client_events = True

    async def handle_in(self, socket, event, payload):
        return Reply({"heard": event})


@pytest.fixture(autouse=True)
def rooms(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channel_layer.DPSChannelLayer"}}
    settings.DPS_ALLOW_ANONYMOUS = True
    settings.DPS_PRESENCE = []
    settings.DPS_TOPICS = {"topics:*": "topics.hooks.handlers.SeedTopic",
                           "rooms:*": "dps_site.chat.ChatRoom", "quiet:*": QuietRoom}
    yield
    layer = channel_layers.backends.get("default")
    if layer is not None:
        async_to_sync(layer.close)()


async def joined(topic: str, join_ref: str) -> WebsocketCommunicator:
    client = WebsocketCommunicator(application, PATH)
    connected, _ = await client.connect()
    assert connected
    await send(client, join_ref, join_ref, topic, "phx_join", {})
    assert await receive(client) == [join_ref, join_ref, topic, "phx_reply", OK]
    return client


async def send(client, *frame) -> None:
    await client.send_to(text_data=json.dumps(list(frame)))


async def receive(client) -> list:
    return json.loads(await client.receive_from(timeout=5))


def test_client_events_are_the_handler_classs_choice():
    routes = topic_routes()
    assert routes.client_events("rooms:lobby") and routes.client_events("quiet:x")
    assert not routes.client_events("topics:matrix")
    assert not routes.client_events("nowhere:x")


async def test_a_pushed_event_is_broadcast_as_handle_in_returns_it():
    ada, bob = await joined("rooms:lobby", "1"), await joined("rooms:lobby", "5")
    await send(ada, "1", "2", "rooms:lobby", "new_msg", {"name": "Ada", "text": "  hi  ", "x": 1})
    assert await receive(ada) == ["1", "2", "rooms:lobby", "phx_reply", OK]
    said = {"name": "Ada", "text": "hi"}  # what ChatRoom.handle_in made of it
    assert await receive(ada) == ["1", None, "rooms:lobby", "new_msg", said]
    assert await receive(bob) == ["5", None, "rooms:lobby", "new_msg", said]
    # The seed's publish still works there, and the rules of events hold for pushes too.
    await send(bob, "5", "6", "rooms:lobby", "publish", ["message", {"n": 1}])
    assert await receive(bob) == ["5", "6", "rooms:lobby", "phx_reply", OK]
    assert await receive(ada) == ["1", None, "rooms:lobby", "message", {"n": 1}]
    assert (await receive(bob))[3] == "message"
    await send(ada, "1", "3", "rooms:lobby", "new_msg", "not an object")
    assert await receive(ada) == ["1", "3", "rooms:lobby", "phx_reply",
                                  error("payload must be a JSON object")]
    await assert_marker_is_next(receive, "rooms:lobby", (bob, "5"), (ada, "1"))  # refused: unsent
    for client in (ada, bob):
        await client.disconnect()


async def test_a_reply_answers_the_pusher_only():
    ada, bob = await joined("quiet:x", "1"), await joined("quiet:x", "2")
    await send(ada, "1", "3", "quiet:x", "anything", {})
    assert await receive(ada) == ["1", "3", "quiet:x", "phx_reply",
                                  {"status": "ok", "response": {"heard": "anything"}}]
    await assert_marker_is_next(receive, "quiet:x", (ada, "1"), (bob, "2"))  # a reply, no broadcast
    for client in (ada, bob):
        await client.disconnect()


async def test_topics_keep_the_seeds_publish_convention():
    client = await joined("topics:matrix", "1")
    await send(client, "1", "2", "topics:matrix", "new_msg", {"text": "hi"})
    assert await receive(client) == ["1", "2", "topics:matrix", "phx_reply",
                                     error("unknown event")]
    await send(client, "1", "3", "topics:matrix", "publish", ["new_msg", {"text": "hi"}])
    assert await receive(client) == ["1", "3", "topics:matrix", "phx_reply", OK]
    assert await receive(client) == ["1", None, "topics:matrix", "new_msg", {"text": "hi"}]
    await client.disconnect()
