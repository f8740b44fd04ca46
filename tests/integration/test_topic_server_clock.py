"""The topic server's timing rules on the real clock: its pause detector and the presence
coalescing both read ``time.monotonic()`` directly (no clock seam yet), so these run here,
in process and without Redis, instead of in tests/unit."""
from __future__ import annotations

import asyncio
import time

from channel_layer import wire
from channel_layer.settings import LayerSettings
from channel_layer.topic_server import TopicServer
from channel_layer.transport import MemoryTransport
from tests.support.topic_server_input import CLUSTER, feed, presence_owner
from tests.support.waiting import await_until


async def test_a_join_storm_of_5000_costs_a_few_diffs_not_5000():
    """5,000 joins in JOIN envelopes of 50 (what one loop iteration of a WS node sends), the
    owner flushing after every envelope as its run loop does: diffs leave at most every
    ``presence_interval``, so the storm costs each member a handful of diffs."""
    ts = presence_owner(presence_interval=0.1)
    sent = []
    started = time.monotonic()
    for batch in range(100):
        entries = [["lobby.storm", batch * 50 + i + 1, batch * 50 + i,
                    {"presence": [f"k{batch * 50 + i}", f"r{batch * 50 + i}", {}]}]
                   for i in range(50)]
        feed(ts, [wire.JOIN, "ws-a", "b1", entries])
        if ts._presence_wait() <= 0:
            ts._send_presence()
            sent.append(time.monotonic())
        time.sleep(0.002)  # the storm's pace: 100 envelopes over about 0.2 s
    while ts.presence.changed:
        time.sleep(max(0.0, ts._presence_wait()))  # the owner's own wait, as its run loop
        ts._send_presence()
        sent.append(time.monotonic())
    elapsed = time.monotonic() - started
    assert ts.counters["presence_messages"] == len(sent) <= elapsed / 0.1 + 2
    assert len(sent) < 5000 / 50  # fewer diffs than even JOIN envelopes
    print(f"5,000 joins in {elapsed:.2f}s: {len(sent)} diffs, at most {len(sent) * 5000} "
          "frames to members")
    assert len(ts.presence.current("lobby.storm")) == 5000


async def test_a_pause_inside_a_redis_round_trip_is_excused_before_nodes_are_judged():
    """The pause detector spans a whole round: a process stopped while it awaited Redis (here
    a ring lookup that takes longer than node_timeout, as a SIGSTOP there looks to its clock)
    must not judge the WS nodes on the stale view it had before."""
    ts = TopicServer(CLUSTER, "ts-a", MemoryTransport(),
                     LayerSettings(node_timeout=0.5, heartbeat_interval=0.1, stats_interval=0.1))
    ts._warm_until = 0.0
    feed(ts, [wire.MEMBER, "g", "ws-a", "b1", 2], now=time.time())
    rounds = 0

    async def follow_ring_paused_once() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 2:
            await asyncio.sleep(1.0)  # the fault: a pause longer than node_timeout, mid-round

    ts._follow_ring = follow_ring_paused_once
    stop = asyncio.Event()
    housekeeping = asyncio.ensure_future(ts._housekeeping(stop))
    try:
        await await_until(lambda: rounds >= 3, 10, "three housekeeping rounds")
    finally:
        stop.set()
        housekeeping.cancel()
    assert ts.counters["pauses_excused"] == 1
    assert "g" in ts.groups and ts.counters["nodes_expired"] == 0
