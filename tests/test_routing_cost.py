"""A group_send costs one delivery per WS node that holds members, whatever the member count.

Counted twice, independently: Redis's own ``INFO commandstats`` (XADD calls on each WS node's
Redis) and the topic server's ``node_deliveries`` counter.
"""
from __future__ import annotations

import asyncio

import pytest
import redis

from channel_layer.layer import DPSChannelLayer
from tests.support.inproc import TopicServerThread, cluster_of

PUBLISHES = 5


def xadd_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_xadd", {}).get("calls", 0))


@pytest.mark.parametrize(("members", "ws_nodes_with_members"),
                         [(1, 1), (10, 1), (10, 2), (1000, 1), (1000, 2)])
async def test_deliveries_per_group_send_equal_ws_nodes_with_members(
        redis_factory, members, ws_nodes_with_members):
    urls = {name: redis_factory().url for name in ("ws-a", "ws-b", "ws-c", "ts-a")}
    cluster = cluster_of(urls)
    layers = {name: DPSChannelLayer(cluster=cluster, node=name) for name in ("ws-a", "ws-b", "ws-c")}
    holders = ["ws-a", "ws-b"][:ws_nodes_with_members]
    with TopicServerThread(cluster) as topic_servers:
        try:
            channels = {name: [] for name in holders}
            for i in range(members):
                name = holders[i % len(holders)]
                channel = await layers[name].new_channel()
                await layers[name].group_add("costly", channel)
                channels[name].append(channel)
            await layers["ws-c"].new_channel()  # a WS node without members: must cost nothing
            await asyncio.sleep(0.3)  # let start-up resync traffic settle before counting
            before = {name: xadd_calls(urls[name]) for name in layers}
            server = topic_servers.servers["ts-a"]
            deliveries_before = server.counters["node_deliveries"]

            for i in range(PUBLISHES):
                await layers["ws-c"].group_send("costly", {"type": "m", "i": i})
            for name, names in channels.items():
                for channel in names:
                    got = [(await asyncio.wait_for(layers[name].receive(channel), 5))["i"]
                           for _ in range(PUBLISHES)]
                    assert got == list(range(PUBLISHES))

            after = {name: xadd_calls(urls[name]) for name in layers}
            for name in holders:
                assert after[name] - before[name] == PUBLISHES  # one per group_send per node
            assert after["ws-c"] == before["ws-c"]
            assert (server.counters["node_deliveries"] - deliveries_before
                    == PUBLISHES * ws_nodes_with_members)
        finally:
            for layer in layers.values():
                await layer.close()
