"""The topic server's pause detector on the real clock: its housekeeping rounds are paced by
real ``asyncio.sleep`` (heartbeat_interval), and the pause under test is a real one inside a
round, so this runs here, in process and without Redis, instead of in tests/unit."""
from __future__ import annotations

import asyncio
import time

from channel_layer import wire
from channel_layer.memory_transport import MemoryTransport
from channel_layer.settings import LayerSettings
from channel_layer.topic_server import TopicServer
from tests.support.topic_server_input import CLUSTER, feed
from tests.support.waiting import await_until


async def test_a_pause_inside_a_redis_round_trip_is_excused_before_nodes_are_judged():
    """The pause detector spans a whole round: a process stopped while it awaited Redis (here
    a ring lookup that takes longer than node_timeout, as a SIGSTOP there looks to its clock)
    must not judge the WS nodes on the stale view it had before."""
    ts = TopicServer(CLUSTER, "ts-a", MemoryTransport(),
                     LayerSettings(node_timeout=0.5, heartbeat_interval=0.1, stats_interval=0.1))
    feed(ts, [wire.MEMBER, "g", "ws-a", "b1", 2], now=time.time())
    rounds = 0

    async def follow_ring_paused_once() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 2:
            await asyncio.sleep(1.0)  # the fault: a pause longer than node_timeout, mid-round

    ts.ring_moves.follow = follow_ring_paused_once
    stop = asyncio.Event()
    housekeeping = asyncio.ensure_future(ts._housekeeping(stop))
    try:
        await await_until(lambda: rounds >= 3, 10, "three housekeeping rounds")
    finally:
        stop.set()
        housekeeping.cancel()
    assert ts.counters["pauses_excused"] == 1
    assert "g" in ts.groups and ts.counters["nodes_expired"] == 0
