"""How fast the admin's topics pages render with many live topics (``manage.py admin_benchmark``).

Real parts only: one ``redis-server`` per topic server, topic tables written through the topic
server's own batch writer (:class:`channel_layer.stats.TopicTable` and
:func:`channel_layer.stats.write_topic_batch`, the code a topic server runs every
``stats_interval``), and the admin's real views rendered through Django (staff request,
templates, every Redis read). Reported: seconds per page, median and worst of ``repeat`` runs.
"""
from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from channel_layer import stats
from channel_layer.ring import Ring
from channel_layer.topic_server import GroupState
from topics.devtools.embedded_redis import RedisProcess

WS_NODES = ("ws-a", "ws-b")


@dataclass
class PageTiming:
    name: str
    path: str
    median: float
    worst: float
    rows: int


def live_groups(count: int, seed: int = 11) -> dict[str, GroupState]:
    """``count`` groups with members on one or both WS nodes and some publishes."""
    rng = random.Random(seed)
    now = time.time()
    groups = {}
    for i in range(count):
        members = {ws: rng.randint(1, 50) for ws in WS_NODES if rng.random() < 0.7} or \
            {"ws-a": 1}
        groups[f"topics.bench{i}"] = GroupState(members=members, messages=rng.randint(0, 500),
                                                created=now - 600,
                                                last_activity=now - rng.random() * 600)
    return groups


async def fill_tables(urls: dict[str, str], groups: dict[str, GroupState], prefix: str,
                      interval: float = 2.0) -> dict[str, float]:
    """Write every group into its owner's topic table as that owner would (one collect with
    publishes in progress, so rates are non-zero); seconds per topic server."""
    ring = Ring(urls)
    owned: dict[str, dict[str, GroupState]] = {ts: {} for ts in urls}
    for name, state in groups.items():
        owned[ring.owner_of(name)][name] = state
    seconds = {}
    for ts, mine in owned.items():
        # The first write of a server that starts with these groups; their publishes count
        # as recent, so every row has a rate.
        table = stats.TopicTable(interval)
        client = aioredis.Redis.from_url(urls[ts])
        started = time.perf_counter()
        await stats.write_topic_batch(client, stats.TopicKeys.of(prefix, ts),
                                      table.collect(mine), 3600)
        seconds[ts] = time.perf_counter() - started
        await client.aclose()
    return seconds


def time_page(render: Callable[[str], int], name: str, path: str, repeat: int) -> PageTiming:
    render(path)  # warm: template compilation, imports, connections
    samples, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = render(path)
        samples.append(time.perf_counter() - started)
    return PageTiming(name, path, statistics.median(samples), max(samples), rows)


def start_redis(ts_count: int) -> dict[str, RedisProcess]:
    servers = {}
    try:
        for i in range(ts_count):
            servers[f"ts-{chr(ord('a') + i)}"] = RedisProcess().start()
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def fill(servers: dict[str, RedisProcess], topics: int, prefix: str) -> dict[str, float]:
    urls = {name: server.url for name, server in servers.items()}
    return asyncio.run(fill_tables(urls, live_groups(topics), prefix))
