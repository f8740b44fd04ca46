"""The Channels adapter (topics.transport.consumer) end to end through the ASGI app, on Channels'
in-memory layer and on DPS's embedded cluster: what a client sees on the wire."""
from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator

from dps_site.asgi import application
from tests.support.markers import assert_marker_is_next
from tests.support.waiting import settle_until
from topics.protocol import v2_binary
from topics.transport import connections, idle_timers

OK = {"status": "ok", "response": {}}
PATH = "/socket/websocket?vsn=2.0.0"


LAYERS = {
    "in-memory": "channels.layers.InMemoryChannelLayer",
    # DPS's embedded cluster: group messages reach the consumer by the fastlane, not the queue.
    "dps-embedded": "channel_layer.DPSChannelLayer",
}


@pytest.fixture(autouse=True, params=sorted(LAYERS))
def channel_layer_backend(request, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": LAYERS[request.param]}}
    yield request.param
    layer = channel_layers.backends.get("default")
    if layer is not None and hasattr(layer, "runtime"):
        async_to_sync(layer.close)()


def members_of(layer, group: str) -> int:
    groups = layer.runtime.membership.groups if hasattr(layer, "runtime") else layer.groups
    return len(groups.get(group, {}))


async def connect(path: str = PATH) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def send(communicator: WebsocketCommunicator, *frame) -> None:
    await communicator.send_to(text_data=json.dumps(list(frame)))


async def receive(communicator: WebsocketCommunicator) -> list:
    return json.loads(await communicator.receive_from(timeout=2))


async def join(communicator, join_ref: str, topic: str = "topics:matrix") -> None:
    await send(communicator, join_ref, join_ref, topic, "phx_join", {})
    assert await receive(communicator) == [join_ref, join_ref, topic, "phx_reply", OK]


async def test_join_publish_reply_precedes_own_copy():
    client = await connect()
    await join(client, "1")
    await send(client, "1", "2", "topics:matrix", "publish", ["event", {"message": "hi"}])
    assert await receive(client) == ["1", "2", "topics:matrix", "phx_reply", OK]
    assert await receive(client) == ["1", None, "topics:matrix", "event", {"message": "hi"}]
    await assert_marker_is_next(receive, "topics:matrix", (client, "1"))  # no second copy
    await client.disconnect()


async def test_two_members_each_receive_once_with_their_own_join_ref():
    alice, bob = await connect(), await connect()
    await join(alice, "1")
    await join(bob, "7")
    await send(alice, "1", "2", "topics:matrix", "publish", ["event", {"message": "hi"}])
    assert await receive(alice) == ["1", "2", "topics:matrix", "phx_reply", OK]
    assert await receive(alice) == ["1", None, "topics:matrix", "event", {"message": "hi"}]
    assert await receive(bob) == ["7", None, "topics:matrix", "event", {"message": "hi"}]
    await assert_marker_is_next(receive, "topics:matrix", (alice, "1"), (bob, "7"))
    await alice.disconnect()
    await bob.disconnect()


async def test_join_reply_waits_for_the_subscription(monkeypatch):
    layer = get_channel_layer()
    group_add, added, entered, release = layer.group_add, [], [], asyncio.Event()

    async def slow_group_add(group, channel):
        entered.append(group)
        await release.wait()  # a slow layer, held until the test lets it go
        await group_add(group, channel)
        added.append(group)

    monkeypatch.setattr(layer, "group_add", slow_group_add)
    client = await connect()
    await send(client, "1", "1", "topics:matrix", "phx_join", {})
    await settle_until(lambda: entered, "the join to reach the layer")
    assert client.output_queue.empty()  # no reply while the subscription is pending
    release.set()
    assert await receive(client) == ["1", "1", "topics:matrix", "phx_reply", OK]
    assert added == ["topics.matrix"]
    assert members_of(layer, "topics.matrix") == 1
    await client.disconnect()


async def test_leave_closes_the_join_and_nothing_more_is_delivered():
    leaver, stayer = await connect(), await connect()
    await join(leaver, "3")
    await join(stayer, "1")
    await send(leaver, "3", "4", "topics:matrix", "phx_leave", {})
    assert await receive(leaver) == ["3", "4", "topics:matrix", "phx_reply", OK]
    assert await receive(leaver) == ["3", "3", "topics:matrix", "phx_close", {}]
    await send(stayer, "1", "2", "topics:matrix", "publish", ["event", {}])
    assert await receive(stayer) == ["1", "2", "topics:matrix", "phx_reply", OK]
    assert await receive(stayer) == ["1", None, "topics:matrix", "event", {}]
    # The leaver joins again: had the event reached it, it would come before the join's reply.
    await join(leaver, "5")
    await assert_marker_is_next(receive, "topics:matrix", (leaver, "5"), (stayer, "1"))
    await leaver.disconnect()
    await stayer.disconnect()


async def test_duplicate_join_closes_the_old_join_and_delivers_once_with_the_new_ref():
    client = await connect()
    await join(client, "1")
    await send(client, "5", "5", "topics:matrix", "phx_join", {})
    assert await receive(client) == ["5", "5", "topics:matrix", "phx_reply", OK]
    assert await receive(client) == ["1", "1", "topics:matrix", "phx_close", {}]
    await send(client, "5", "6", "topics:matrix", "publish", ["event", {}])
    assert await receive(client) == ["5", "6", "topics:matrix", "phx_reply", OK]
    assert await receive(client) == ["5", None, "topics:matrix", "event", {}]
    await assert_marker_is_next(receive, "topics:matrix", (client, "5"))  # once, not per join
    await client.disconnect()


async def test_heartbeat_and_unmatched_topic():
    client = await connect()
    await send(client, None, "5", "phoenix", "heartbeat", {})
    assert await receive(client) == [None, "5", "phoenix", "phx_reply", OK]
    await send(client, "1", "6", "room:x", "phx_join", {})
    assert await receive(client) == [
        None, "6", "room:x", "phx_reply",
        {"status": "error", "response": {"reason": "unmatched topic"}}]
    await client.disconnect()


@pytest.mark.parametrize("query", ["vsn=3.0.0", "vsn=", "vsn=1"])
async def test_unsupported_vsn_is_refused_before_accept(query):
    communicator = WebsocketCommunicator(application, f"/socket/websocket?{query}")
    connected, _ = await communicator.connect()
    assert not connected  # closed before accept: the ASGI server answers HTTP 403


async def test_missing_vsn_means_v1_as_in_phoenix():
    """Phoenix's ``params["vsn"] || "1.0.0"``: clients that send no vsn (the V1 envelope
    clients) speak objects, not arrays."""
    client = await connect("/socket/websocket")
    await client.send_json_to({"topic": "phoenix", "event": "heartbeat", "payload": {},
                               "ref": "1"})
    assert await client.receive_json_from() == {
        "topic": "phoenix", "event": "phx_reply", "ref": "1", "join_ref": None,
        "payload": {"status": "ok", "response": {}}}
    await client.disconnect()


async def test_v1_client_receives_objects_and_v2_members_arrays():
    v1, v2 = await connect("/socket/websocket?vsn=1.0.0"), await connect()
    await v1.send_json_to({"topic": "topics:matrix", "event": "phx_join", "payload": {},
                           "ref": "1", "join_ref": "1"})
    assert await v1.receive_json_from() == {"join_ref": "1", "ref": "1", "topic": "topics:matrix",
                                            "event": "phx_reply", "payload": OK}
    await join(v2, "9")
    await send(v2, "9", "10", "topics:matrix", "publish", ["event", {"n": 1}])
    assert await receive(v2) == ["9", "10", "topics:matrix", "phx_reply", OK]
    assert await receive(v2) == ["9", None, "topics:matrix", "event", {"n": 1}]
    assert await v1.receive_json_from() == {"join_ref": "1", "ref": None, "topic": "topics:matrix",
                                            "event": "event", "payload": {"n": 1}}
    await v1.disconnect()
    await v2.disconnect()


async def test_bad_publish_gets_an_error_reply_and_the_client_keeps_receiving():
    sloppy, other = await connect(), await connect()
    await join(sloppy, "1")
    await join(other, "2")
    await send(sloppy, "1", "2", "topics:matrix", "publish", ["event", "not an object"])
    assert await receive(sloppy) == ["1", "2", "topics:matrix", "phx_reply", {
        "status": "error", "response": {"reason": "payload must be a JSON object"}}]
    await send(other, "2", "3", "topics:matrix", "publish", ["event", {}])
    assert await receive(other) == ["2", "3", "topics:matrix", "phx_reply", OK]
    assert await receive(other) == ["2", None, "topics:matrix", "event", {}]
    assert await receive(sloppy) == ["1", None, "topics:matrix", "event", {}]
    await sloppy.disconnect()
    await other.disconnect()


async def test_garbage_closes_only_the_sender_and_others_still_receive():
    garbler, good = await connect(), await connect()
    await join(garbler, "1")
    await join(good, "2")
    await garbler.send_to(text_data="this is not json")
    assert await garbler.receive_output(timeout=2) == {"type": "websocket.close", "code": 1003}
    await send(good, "2", "3", "topics:matrix", "publish", ["event", {}])
    assert await receive(good) == ["2", "3", "topics:matrix", "phx_reply", OK]
    assert await receive(good) == ["2", None, "topics:matrix", "event", {}]
    await assert_marker_is_next(receive, "topics:matrix", (good, "2"))
    await garbler.disconnect()  # its consumer has ended: all it ever sent is in the queue
    assert garbler.output_queue.empty()  # nothing after the close
    await good.disconnect()


async def test_binary_frame_that_is_not_utf8_closes_1007():
    client = await connect()
    await client.send_to(bytes_data=b"\xff\xfe")
    assert await client.receive_output(timeout=2) == {"type": "websocket.close", "code": 1007}
    await client.disconnect()


async def test_binary_frame_with_json_is_answered_as_text():
    client = await connect()
    await client.send_to(bytes_data=b'[null,"1","phoenix","heartbeat",{}]')
    assert await receive(client) == [None, "1", "phoenix", "phx_reply", OK]
    await client.disconnect()


async def test_binary_push_reaches_v2_members_as_one_binary_frame_in_order_with_json():
    v2, v1 = await connect(), await connect("/socket/websocket?vsn=1.0.0")
    await join(v2, "1")
    await v1.send_json_to({"topic": "topics:matrix", "event": "phx_join", "payload": {},
                           "ref": "1", "join_ref": "1"})
    await v1.receive_json_from()
    await v2.send_to(bytes_data=v2_binary.encode_push("1", "2", "topics:matrix", "blob",
                                                      b"\x00\xff"))
    await send(v2, "1", "3", "topics:matrix", "publish", ["after", {}])
    # Four frames: each reply before its own copy, and the broadcasts in publish order (the
    # second publish's reply may go out before the first broadcast comes back).
    blob = {"type": "websocket.send",
            "bytes": v2_binary.encode_broadcast("topics:matrix", "blob", b"\x00\xff")}
    frames = [await v2.receive_output(timeout=2) for _ in range(4)]
    reply_2 = {"type": "websocket.send", "text": json.dumps(["1", "2", "topics:matrix",
                                                             "phx_reply", OK])}
    reply_3 = {"type": "websocket.send", "text": json.dumps(["1", "3", "topics:matrix",
                                                             "phx_reply", OK])}
    after = {"type": "websocket.send",
             "text": json.dumps(["1", None, "topics:matrix", "after", {}])}
    decoded = [f if "bytes" in f else {**f, "text": json.dumps(json.loads(f["text"]))}
               for f in frames]
    assert sorted(map(repr, decoded)) == sorted(map(repr, [reply_2, blob, reply_3, after]))
    assert decoded.index(reply_2) < decoded.index(blob) < decoded.index(after)
    assert decoded.index(reply_3) < decoded.index(after)
    # Phoenix's V1 has no binary frames: a V1 member gets the bytes as base64 in JSON.
    assert await v1.receive_json_from() == {
        "join_ref": "1", "ref": None, "topic": "topics:matrix", "event": "blob",
        "payload": {"binary": "AP8="}}
    assert (await v1.receive_json_from())["event"] == "after"
    await v1.disconnect()
    await v2.disconnect()


async def test_group_send_failure_is_reported_to_the_publisher(monkeypatch):
    client = await connect()
    await join(client, "1")

    async def full(group, message):
        raise ChannelFull()

    monkeypatch.setattr(get_channel_layer(), "group_send", full)
    await send(client, "1", "2", "topics:matrix", "publish", ["event", {}])
    assert await receive(client) == ["1", "2", "topics:matrix", "phx_reply", {
        "status": "error",
        "response": {"reason": "publish failed: the topic is over capacity"}}]
    await client.disconnect()


async def test_disconnect_discards_every_group():
    client = await connect()
    await join(client, "1", "topics:aa")
    await join(client, "2", "topics:bb")
    await client.disconnect()
    layer = get_channel_layer()
    assert not members_of(layer, "topics.aa")
    assert not members_of(layer, "topics.bb")


async def test_topic_limit_comes_from_settings(settings):
    settings.DPS_MAX_TOPICS_PER_SOCKET = 1
    client = await connect()
    await join(client, "1", "topics:aa")
    await send(client, "2", "2", "topics:bb", "phx_join", {})
    assert await receive(client) == ["2", "2", "topics:bb", "phx_reply", {
        "status": "error", "response": {"reason": "too many topics"}}]
    await client.disconnect()


async def test_frame_limit_comes_from_settings(settings):
    settings.DPS_MAX_FRAME_BYTES = 64
    client = await connect()
    await send(client, None, "1", "phoenix", "heartbeat", {"pad": "x" * 64})
    assert await client.receive_output(timeout=2) == {"type": "websocket.close", "code": 1009}
    await client.disconnect()


async def test_idle_socket_is_closed_and_activity_keeps_it_open(settings, loop_clock):
    settings.DPS_IDLE_TIMEOUT = 0.3
    client = await connect()
    for ref in range(5):  # 0.5 s of traffic, never 0.3 s apart
        await loop_clock.advance(0.1)
        await send(client, None, str(ref), "phoenix", "heartbeat", {})
        assert await receive(client) == [None, str(ref), "phoenix", "phx_reply", OK]
    await loop_clock.advance(0.3 + idle_timers.TICK)  # silent past the timeout and its tick
    assert await client.receive_output(timeout=2) == {"type": "websocket.close", "code": 1001}
    await client.disconnect()


async def test_a_protocol_error_close_leaves_every_topic_first():
    layer = get_channel_layer()
    open_before = connections.open_sockets()  # other tests' long-poll sessions may live on
    client = await connect()
    await join(client, "1", "topics:aa")
    await join(client, "2", "topics:bb")
    await client.send_to(bytes_data=b"\xff\xfe")  # invalid UTF-8
    assert (await client.receive_output(2))["code"] == 1007
    assert not members_of(layer, "topics.aa") and not members_of(layer, "topics.bb")
    await client.disconnect()  # the server's disconnect after the close: the slot is free
    assert connections.open_sockets() == open_before


async def test_a_message_sent_to_the_consumers_channel_is_handled_by_its_listener():
    """Messages on the consumer's own channel (not its fastlane) still reach it: the lean
    receive loop keeps one listener on the channel, taking turns with the client's frames."""
    from topics.transport.broadcasts import broadcast_message

    client = await connect()
    await join(client, "1")
    layer = get_channel_layer()
    groups = layer.runtime.membership.groups if hasattr(layer, "runtime") else layer.groups
    [channel] = list(groups["topics.matrix"])
    await layer.send(channel, broadcast_message("topics:matrix", "direct", '{"a":1}'))
    assert await receive(client) == ["1", None, "topics:matrix", "direct", {"a": 1}]
    await send(client, None, "2", "phoenix", "heartbeat", {})  # the client's frames go on
    assert (await receive(client))[1] == "2"
    await client.disconnect()
