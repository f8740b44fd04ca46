"""Admission (topics.transport.admission) and member delivery (topics.transport.delivery) each on
their own, with a recording ASGI send and a fake layer: no server, no Redis."""
from __future__ import annotations

import asyncio
import json

import pytest

from topics.hooks.identity import Identity
from topics.protocol import PhoenixSocket, Subscribe, Unsubscribe, v1_json, v2_json
from topics.transport import connections, delivery, ws_counters
from topics.transport.admission import admit, release
from topics.transport.broadcasts import broadcast_message
from topics.transport.delivery import MemberDelivery

TOPIC = "topics:matrix"


class Layer:
    """What admission asks of a channel layer, recorded; ``failing`` makes group_add raise."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        self.calls: list[tuple] = []

    async def group_add(self, group: str, channel: str) -> None:
        if self.failing:
            raise ConnectionError("the owner is down")
        self.calls.append(("add", group, channel))

    async def group_discard(self, group: str, channel: str) -> None:
        self.calls.append(("discard", group, channel))


async def connect_as_who(params, scope):
    """``?who=ID`` is that identity; no ``who``: refused."""
    return Identity(params["who"]) if "who" in params else None


@pytest.fixture(autouse=True)
def hook(settings):
    settings.DPS_CONNECT = f"{__name__}.connect_as_who"


def scope(query: str) -> dict:
    return {"type": "websocket", "path": "/socket/websocket", "query_string": query.encode(),
            "headers": [], "client": ("127.0.0.1", 5000)}


# --- admission ------------------------------------------------------------------------------


async def test_an_admitted_socket_is_counted_and_in_its_identity_group_until_released():
    layer, sent = Layer(), []
    context = await admit(scope("who=ada"), _recorder(sent), layer, "ch1")
    assert context is not None, sent
    assert context.identity == Identity("ada") and sent == []
    assert connections.open_sockets_of("user:ada") == 1
    assert layer.calls == [("add", Identity("ada").group, "ch1")]
    await release(context, layer, "ch1")
    assert connections.open_sockets_of("user:ada") == 0
    assert layer.calls[-1] == ("discard", Identity("ada").group, "ch1")


async def test_a_refusal_answers_the_handshake_and_counts_nothing_open(settings):
    sent: list[dict] = []
    open_before = connections.open_sockets()
    assert await admit(scope(""), _recorder(sent), Layer(), "ch1") is None
    assert sent == [{"type": "websocket.close"}]  # no denial extension: the server's 403
    settings.DPS_MAX_CONNECTIONS_PER_IDENTITY = 0
    assert await admit(scope("who=ada"), _recorder(sent), Layer(), "ch2") is None
    assert connections.refused_handshakes()["unauthenticated"] >= 1
    assert connections.open_sockets() == open_before


async def test_an_unreachable_layer_refuses_with_503_and_forgets_the_socket():
    sent: list[dict] = []
    denial = scope("who=bob")
    denial["extensions"] = {"websocket.http.response": {}}
    assert await admit(denial, _recorder(sent), Layer(failing=True), "ch1") is None
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 503
    assert connections.open_sockets_of("user:bob") == 0


def _recorder(sent: list[dict]):
    async def send(message: dict) -> None:
        sent.append(message)
    return send


# --- member delivery ------------------------------------------------------------------------


class Connection:
    """An ASGI send whose writes can be made to block (a client that stopped reading)."""

    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.blocked: asyncio.Future | None = None

    async def send(self, message: dict) -> None:
        if self.blocked is not None:
            await self.blocked
        self.frames.append(message)


def member(serializer=v2_json, **limits) -> tuple[MemberDelivery, Connection, list]:
    connection, slow = Connection(), []

    async def on_slow_client(unsubscribes):
        slow.append(unsubscribes)

    async def dispatch(message):
        raise AssertionError(f"not a broadcast: {message}")

    out = MemberDelivery(connection.send, max_pending_frames=limits.get("frames", 10),
                         max_send_buffer=limits.get("bytes", 10_000), dispatch=dispatch,
                         on_slow_client=on_slow_client)
    out.socket = PhoenixSocket(serializer)
    out.socket.joined(Subscribe(TOPIC, "1", "1"))
    return out, connection, slow


def texts(connection: Connection) -> list:
    return [json.loads(frame["text"]) for frame in connection.frames]


async def test_broadcasts_wait_while_a_handler_runs_and_then_go_out_in_order():
    out, connection, _ = member()
    out.hold()
    out.fastlane(broadcast_message(TOPIC, "first", '{"n":1}'))
    out.fastlane(broadcast_message(TOPIC, "second", '{"n":2}'))
    assert connection.frames == []  # the handler's reply goes first
    await out.send_text('["1","9","topics:matrix","phx_reply",{"status":"ok","response":{}}]')
    out.release()
    assert [frame[3] for frame in texts(connection)] == ["phx_reply", "first", "second"]


async def test_a_v1_member_gets_a_binary_broadcast_as_base64():
    out, connection, _ = member(v1_json)
    out.deliver(broadcast_message(TOPIC, "blob", b"\x00\xff"))
    assert texts(connection) == [{"join_ref": "1", "ref": None, "topic": TOPIC, "event": "blob",
                                  "payload": {"binary": "AP8="}}]


async def test_nothing_is_delivered_for_a_topic_no_longer_joined():
    out, connection, _ = member()
    out.socket.handle_disconnect()
    out.deliver(broadcast_message(TOPIC, "late", "{}"))
    assert connection.frames == []


async def test_a_client_that_stops_reading_is_dropped_past_the_pending_limit():
    out, connection, slow = member(frames=3)
    connection.blocked = asyncio.get_running_loop().create_future()
    before = ws_counters.COUNTS.slow_client_disconnects
    for n in range(5):  # one in the server's send, three queued, the fifth over the limit
        out.deliver(broadcast_message(TOPIC, "e", f'{{"n":{n}}}'))
    await asyncio.sleep(0)  # the slow-client task runs
    assert slow == [[Unsubscribe(TOPIC)]]
    assert ws_counters.COUNTS.slow_client_disconnects == before + 1
    connection.blocked.set_result(None)


async def test_a_frame_after_the_close_is_counted_not_sent():
    out, connection, _ = member()
    await out.send_to_client({"type": "websocket.close", "code": 1000})
    before = delivery.SENDS_AFTER_CLOSE["websocket.send"]
    await out.send_text("late")
    assert connection.frames == [{"type": "websocket.close", "code": 1000}]
    assert delivery.SENDS_AFTER_CLOSE["websocket.send"] == before + 1
