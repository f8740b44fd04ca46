"""A group_send costs one delivery per WS node that holds members, whatever the member count.

Counted twice, independently: Redis's own ``INFO commandstats`` (every command on every node's
Redis: one PUBLISH to the owner plus one PUBLISH per WS node with members, and no reads) and the
topic server's ``node_deliveries`` counter.
"""
from __future__ import annotations

import asyncio

import pytest
import redis

from channel_layer.layer import DPSChannelLayer
from channel_layer.settings import LayerSettings
from tests.support.inproc import TopicServerThread, cluster_of

PUBLISHES = 5


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command on one Redis, the INFO calls that read them excluded (the client is
    connected before the first count, so its own connection set-up is not counted)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()
            if name != "cmdstat_info"}


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}


@pytest.mark.parametrize(("members", "ws_nodes_with_members"),
                         [(1, 1), (10, 1), (10, 2), (1000, 1), (1000, 2)])
async def test_deliveries_per_group_send_equal_ws_nodes_with_members(
        redis_factory, members, ws_nodes_with_members):
    urls = {name: redis_factory().url for name in ("ws-a", "ws-b", "ws-c", "ts-a")}
    cluster = cluster_of(urls)
    # No heartbeats or stats inside the counted window: only what the publishes cost remains.
    quiet = {"heartbeat_interval": 60, "stats_interval": 60, "startup_sync_timeout": 0.2}
    layers = {name: DPSChannelLayer(cluster=cluster, node=name, **quiet)
              for name in ("ws-a", "ws-b", "ws-c")}
    holders = ["ws-a", "ws-b"][:ws_nodes_with_members]
    with TopicServerThread(cluster, settings=LayerSettings(**quiet)) as topic_servers:
        try:
            channels = {name: [] for name in holders}
            for i in range(members):
                name = holders[i % len(holders)]
                channel = await layers[name].new_channel()
                await layers[name].group_add("costly", channel)
                channels[name].append(channel)
            await layers["ws-c"].new_channel()  # a WS node without members: must cost nothing
            await asyncio.sleep(0.3)  # let start-up resync traffic settle before counting
            # One delivery first: a sender that reached a node before it had subscribed queues
            # until one envelope goes out live, and counting starts from that steady state.
            await layers["ws-c"].group_send("costly", {"type": "m", "i": -1})
            for name, names in channels.items():
                for channel in names:
                    assert (await asyncio.wait_for(layers[name].receive(channel), 5))["i"] == -1
            meters = {name: redis.Redis.from_url(url, single_connection_client=True)
                      for name, url in urls.items()}
            before = {name: command_calls(meter) for name, meter in meters.items()}
            server = topic_servers.servers["ts-a"]
            deliveries_before = server.counters["node_deliveries"]

            for i in range(PUBLISHES):
                await layers["ws-c"].group_send("costly", {"type": "m", "i": i})
            for name, names in channels.items():
                for channel in names:
                    got = [(await asyncio.wait_for(layers[name].receive(channel), 5))["i"]
                           for _ in range(PUBLISHES)]
                    assert got == list(range(PUBLISHES))

            spent = {name: calls_between(before[name], command_calls(meter))
                     for name, meter in meters.items()}
            for meter in meters.values():
                meter.close()
            assert spent["ts-a"] == {"publish": PUBLISHES}  # the publishes to the owner
            for name in holders:
                assert spent[name] == {"publish": PUBLISHES}  # one per group_send per node
            assert spent["ws-c"] == {}
            assert (server.counters["node_deliveries"] - deliveries_before
                    == PUBLISHES * ws_nodes_with_members)
        finally:
            for layer in layers.values():
                await layer.close()
