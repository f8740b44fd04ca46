"""What a topic server tells the operator: its stats snapshot and its topic table, written to its
own Redis every ``stats_interval`` (schema: :mod:`channel_layer.stats`), and the Redis clients
it holds besides its inbox's (its own Redis, kept while a removed server drains; the other
topic servers' Redis, where a moved group's history was).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis

from channel_layer import stats
from channel_layer.clock import SYSTEM_CLOCK, Clock
from channel_layer.cluster import TS, Cluster, Node
from channel_layer.resp import CommandPipe
from channel_layer.settings import LayerSettings
from channel_layer.topic_server.registry import GroupRegistry
from channel_layer.transport import Transport


class ServerRedis:
    """The topic server's Redis clients besides the transport's."""

    def __init__(self, own_node: Node, settings: LayerSettings) -> None:
        self.own_node = own_node  # its Redis, kept while it drains
        self.settings = settings
        self._own: aioredis.Redis | None = None  # history (none in the embedded cluster)
        self._pipe: CommandPipe | None = None  # the topic table's writes
        self._others: dict[str, aioredis.Redis] = {}

    def _client(self, url: str) -> aioredis.Redis:
        return aioredis.Redis.from_url(url, socket_connect_timeout=self.settings.connect_timeout,
                                       socket_timeout=self.settings.connect_timeout)

    def own(self) -> aioredis.Redis | None:
        url = self.own_node.redis_url  # (still reachable while a removed server drains)
        if url is not None and self._own is None:
            self._own = self._client(url)
        return self._own

    def pipe(self) -> CommandPipe | None:
        """The topic table's writes: bare RESP, no redis-py packing per command."""
        url = self.own_node.redis_url
        if url is not None and self._pipe is None:
            self._pipe = CommandPipe(url, self.settings.connect_timeout)
        return self._pipe

    def others(self, cluster: Cluster) -> list[aioredis.Redis]:
        """Clients of the other topic servers' Redis (where a moved group's history was)."""
        own = cluster.node(self.own_node.name).redis_url if cluster.has_node(
            self.own_node.name) else self.own_node.redis_url
        clients = []
        for node in cluster.nodes:
            if node.role != TS or node.name == self.own_node.name \
                    or node.redis_url in (None, own):
                continue
            client = self._others.get(node.redis_url)
            if client is None:
                client = self._others[node.redis_url] = self._client(node.redis_url)
            clients.append(client)
        return clients

    async def close(self) -> None:
        for client in [self._own, *self._others.values()]:
            if client is not None:
                await client.aclose()
        if self._pipe is not None:
            await self._pipe.close()


class StatsPublisher:
    def __init__(self, node: str, settings: LayerSettings, transport: Transport,
                 registry: GroupRegistry, redis: ServerRedis, clock: Clock = SYSTEM_CLOCK) -> None:
        self.node = node
        self.settings = settings
        self.transport = transport
        self.registry = registry
        self.redis = redis
        self.clock = clock
        self.started = clock.wall()
        self.topic_table = stats.TopicTable(settings.stats_interval)
        self._rates = stats.RateWindow()
        self.last_rates: dict[str, float] = {}

    def snapshot(self, boot: str, counters: Mapping[str, int]) -> dict:
        """This server's snapshot (schema: :mod:`channel_layer.stats`)."""
        # The hottest groups over the last minute, then idle ones up to the limit (taken as
        # they come: no scan of every group; the admin's topics list has them all).
        groups = self.registry.groups
        limit = self.settings.stats_top_groups
        hottest = [(name, count, groups[name]) for name, count in
                   self.topic_table.hottest(limit) if name in groups]
        listed = {name for name, _, _ in hottest}
        hottest += itertools.islice(((name, 0, state) for name, state in groups.items()
                                     if name not in listed), max(0, limit - len(hottest)))
        return {
            "role": "ts",
            "node": self.node,
            "boot": boot,
            "started": self.started,
            "updated": self.clock.wall(),
            "version": stats.VERSION,
            "group_count": len(groups),
            "member_count": self.registry.member_count(),
            "ws_nodes": {name: {"last_seen": s.last_seen, "synced": s.synced}
                         for name, s in self.registry.ws_nodes.items()},
            "counters": dict(counters),
            "rates": self.last_rates,
            "groups": [
                {"group": name, "members": dict(s.members), "messages": s.messages,
                 "rate": count / stats.WINDOW_SECONDS, "created": s.created,
                 "last_activity": s.last_activity}
                for name, count, s in hottest
            ],
        }

    async def publish(self, boot: str, counters: Callable[[], Mapping[str, int]]) -> None:
        """Write the snapshot and the topic table's changed rows; on a failure the whole
        table is rewritten next time (Redis may hold part of the batch, or none)."""
        batch = self.topic_table.collect(self.registry.groups)  # first: the snapshot uses it
        current = counters()
        self.last_rates = self._rates.add(self.clock.wall(), {
            "publishes": current.get("published", 0),
            "deliveries": current.get("node_deliveries", 0)})
        ttl = stats.snapshot_ttl(self.settings.stats_interval)
        try:
            await self.transport.put_stats(self.node,
                                           stats.encode_snapshot(self.snapshot(boot, current)),
                                           ttl)
            pipe = self.redis.pipe()
            if pipe is not None:  # None: the embedded cluster's admin reads it in process
                await stats.write_topic_batch(
                    pipe, stats.TopicKeys.of(self.settings.prefix, self.node), batch,
                    max(ttl, int(stats.WINDOW_SECONDS)))
        except Exception:
            self.topic_table = stats.TopicTable(self.settings.stats_interval)
            raise
