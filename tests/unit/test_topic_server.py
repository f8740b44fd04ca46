"""The topic server's bookkeeping, driven envelope by envelope (no I/O)."""
from __future__ import annotations

from channel_layer import wire
from channel_layer.memory_transport import MemoryTransport
from channel_layer.ring import Ring
from channel_layer.settings import LayerSettings
from channel_layer.topic_server import TopicServer
from tests.support.topic_server_input import CLUSTER, feed


def server() -> TopicServer:
    ts = TopicServer(CLUSTER, "ts-a", MemoryTransport(), LayerSettings(node_timeout=5))
    return ts


async def test_members_per_node_and_forgetting_empty_groups():
    ts = server()
    feed(ts, [wire.MEMBER, "g", "ws-a", "boot1", 1], [wire.MEMBER, "g", "ws-b", "bootB", 3])
    assert ts.groups["g"].members == {"ws-a": 1, "ws-b": 3}
    feed(ts, [wire.MEMBER, "g", "ws-a", "boot1", 0], [wire.MEMBER, "g", "ws-b", "bootB", 0])
    assert "g" not in ts.groups


async def test_one_delivery_per_node_with_members():
    ts = server()
    feed(ts, [wire.MEMBER, "g", "ws-a", "b1", 500], [wire.MEMBER, "g", "ws-b", "b2", 1])
    feed(ts, [wire.PUBLISH, "g", 10**10, b"msg"])
    pending = {node: box._pending for node, box in ts.peers.outboxes.items()}
    delivery = wire.encode([wire.GROUP_DELIVER, "g", 10**10, b"msg"])
    assert pending["ws-a"][-1] == delivery and pending["ws-b"][-1] == delivery
    assert ts.counters["node_deliveries"] == 2
    assert ts.groups["g"].messages == 1


async def test_expired_publish_is_dropped_and_counted():
    ts = server()
    feed(ts, [wire.MEMBER, "g", "ws-a", "b1", 1], [wire.PUBLISH, "g", 1.0, b"old"])
    assert ts.counters["expired"] == 1 and ts.counters.get("node_deliveries", 0) == 0


async def test_resync_keeps_counters_of_groups_that_stay():
    ts = server()
    feed(ts, [wire.MEMBER, "g", "ws-a", "b1", 1], [wire.MEMBER, "h", "ws-a", "b1", 1])
    feed(ts, [wire.PUBLISH, "g", 10**10, b"m"], [wire.PUBLISH, "g", 10**10, b"m"])
    feed(ts, [wire.SYNC, "ws-a", "b1", "ts-a", {"g": 4}])
    assert ts.groups["g"].messages == 2 and ts.groups["g"].members == {"ws-a": 4}
    assert "h" not in ts.groups and ts.ws_nodes["ws-a"].synced


async def test_restarted_ws_node_replaces_old_memberships():
    ts = server()
    feed(ts, [wire.MEMBER, "g", "ws-a", "old", 2], [wire.MEMBER, "g", "ws-b", "b", 1])
    feed(ts, [wire.HELLO, "ws-a", "new"])
    assert ts.groups["g"].members == {"ws-b": 1}


async def test_silent_node_expires():
    ts = server()
    feed(ts, [wire.MEMBER, "g", "ws-a", "b1", 2], now=100.0)
    ts.expire_silent_nodes(104.0)
    assert "g" in ts.groups
    ts.expire_silent_nodes(106.0)
    assert "g" not in ts.groups and ts.counters["nodes_expired"] == 1


async def test_bye_drops_only_the_current_boot():
    ts = server()
    feed(ts, [wire.MEMBER, "g", "ws-a", "b1", 2], [wire.BYE, "ws-a", "other-boot"])
    assert "g" in ts.groups
    feed(ts, [wire.BYE, "ws-a", "b1"])
    assert "g" not in ts.groups


async def test_garbage_is_counted_not_fatal():
    ts = server()
    ts.handle(b"\xc1not msgpack", 1.0)
    ts.handle(wire.encode(["not", "an", "envelope"]), 1.0)
    ts.handle(wire.encode([99, "x"]), 1.0)
    ts.handle(wire.encode([wire.PUBLISH, "g"]), 1.0)
    assert ts.counters["malformed_envelopes"] == 3 and ts.counters["unknown_envelopes"] == 1


async def test_plain_members_are_delivered_here_and_handed_to_a_new_owner():
    ts = server()
    feed(ts, [wire.PLAIN_MEMBER, "g", "worker", 99.0, 10],
         [wire.PUBLISH, "g", 10**10, b"job"])
    assert [(c, data) for c, _, data, _ in ts.owner.plain_pushes] == [("worker", b"job")]
    ts.owner.plain_pushes.clear()
    # The ring changes so that ts-b owns the group: its plain members go there, and here the
    # group (nobody else in it) is forgotten.
    ts.follower.ring = Ring(["ts-b"])
    ts.ring_moves.hand_over_plain_members()
    assert "g" not in ts.groups
    [envelope] = [wire.decode(e) for e in ts.peers.outboxes["ts-b"]._pending]
    assert envelope == [wire.PLAIN_MEMBER, "g", "worker", 99.0, 10]
