"""A read-only view of the live cluster for the admin: nodes, ring, TS stats, hot topics.

This module owns the I/O the cluster page needs, and nothing else. It reads every node's
published snapshot (key and schema: :mod:`channel_layer.stats`) from that node's own Redis with
a short-timeout client, asks the ring which TS owns what, and reads the counters of this
process's own layer. In the embedded development cluster (no Redis) it asks the in-process
topic server instead.

Everything it returns is plain JSON data. Every Redis URL in it is redacted, and a Redis that
does not answer or a TS with no stats is reported per node instead of raised, so one dead node
never takes the page down.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.exceptions import RedisError

from channel_layer import stats
from channel_layer.cluster import Cluster, Node, load_cluster
from channel_layer.layer import DPSChannelLayer
from channel_layer.ring import HASH_SPACE, Ring
from channel_layer.runtime import NodeRuntime
from channel_layer.settings import LayerSettings
from topics.hooks.identity import IDENTITY_GROUP_PREFIX
from topics.operator.ring_drawing import HotTopic, ring_drawing, shares
from topics.protocol.topic_names import (
    INVALID_NAME,
    group_for_topic,
    is_topics_topic,
    is_valid_site_topic,
    is_valid_topic,
    topic_for_group,
)

DEFAULT_PREFIX = "dps"
TOP_TOPICS = 50          # rows in the hot-topics table
REDIS_TIMEOUT = 0.5      # seconds to connect to / read from one node's Redis
RUNTIME_TIMEOUT = 1.0    # seconds to wait for this process's layer thread to answer

UP = "up"
DOWN = "down"
NO_STATS = "down / no stats"
UNREACHABLE = "unreachable"
BAD_STATS = "unreadable stats"
IN_PROCESS = "in process"

T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """Where the view comes from: a cluster, its Redis key prefix and (maybe) our own layer."""

    cluster: Cluster
    prefix: str = DEFAULT_PREFIX
    layer: DPSChannelLayer | None = None
    stats_interval: float = LayerSettings.stats_interval

    @property
    def down_after(self) -> float:
        return stats.down_after(self.stats_interval)


@dataclass
class _Probe:
    """What one Redis server said: whether it answered, and the raw snapshots it holds."""

    reachable: bool
    error: str | None = None
    snapshots: dict[str, bytes | None] = field(default_factory=dict)


def default_source() -> Source:
    """The cluster of the Django default channel layer (and the layer, if it is a DPS one)."""
    from channels.layers import get_channel_layer
    from django.conf import settings

    layer = get_channel_layer()
    if isinstance(layer, DPSChannelLayer):
        return Source(layer.cluster, layer.settings.prefix, layer, layer.settings.stats_interval)
    config = getattr(settings, "DPS_LAYER", None) or {}
    return Source(load_cluster(getattr(settings, "DPS_CLUSTER", None)),
                  config.get("prefix", DEFAULT_PREFIX),
                  stats_interval=config.get("stats_interval", LayerSettings.stats_interval))


def gather(source: Source, query: str = "", lookup: str = "", top: int = TOP_TOPICS,
           timeout: float = REDIS_TIMEOUT) -> dict[str, Any]:
    """Everything the cluster page shows, as JSON-ready data. ``query`` filters the hot topics
    by substring; ``lookup`` is a topic (``topics:NAME``) or group whose owner to look up."""
    cluster = source.cluster
    now = time.time()
    if cluster.embedded:
        probes: dict[str, _Probe] = {}
        snapshots = _embedded_snapshots(source.layer)
    else:
        probes = _probe_all(cluster, source.prefix, timeout)
        snapshots = {}
    nodes = [_node_view(node, probes, snapshots, now, source.down_after)
             for node in cluster.nodes]
    by_name = {n["name"]: n for n in nodes}
    servers = [_ts_view(node, by_name[node.name]) for node in cluster.ts_nodes]
    topics = _hot_topics(servers, now)
    shown = _filtered(topics, query)
    ring = Ring(n.name for n in cluster.ts_nodes)
    down = [n["name"] for n in nodes if n["role"] == "ts" and n["status"] != UP]
    hot = [HotTopic(t["topic"], t["group"], t["owner"], t["rate"]) for t in topics[:top]]
    return {
        "generated": now,
        "cluster": {"source": cluster.source, "embedded": cluster.embedded,
                    "prefix": source.prefix, "down_after": source.down_after},
        "nodes": nodes,
        "ring": {**ring_view(cluster, lookup), "drawing": ring_drawing(ring, down, hot)},
        "topic_servers": [{k: v for k, v in s.items() if k != "groups"} for s in servers],
        "hot_topics": {"query": query, "matched": len(shown), "top": top, "rows": shown[:top]},
        "local": local_view(source.layer),
    }


# ------------------------------------------------------------------------------- Redis
def _probe_all(cluster: Cluster, prefix: str, timeout: float) -> dict[str, _Probe]:
    """Ask every distinct Redis URL once (in parallel) for the snapshots of the nodes it holds."""
    names_by_url: dict[str, list[str]] = {}
    for node in cluster.nodes:
        names_by_url.setdefault(node.redis_url, []).append(node.name)
    with ThreadPoolExecutor(max_workers=min(8, len(names_by_url))) as pool:
        results = pool.map(lambda item: _probe(item[0], item[1], prefix, timeout),
                           names_by_url.items())
        return dict(zip(names_by_url, results, strict=True))


def _probe(url: str, names: Sequence[str], prefix: str, timeout: float) -> _Probe:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        # One MGET for every node whose home is this Redis.
        values = client.mget([stats.snapshot_key(prefix, name) for name in names])
        return _Probe(True, snapshots=dict(zip(names, values, strict=True)))
    except (RedisError, OSError) as exc:
        return _Probe(False, error=safe_error(exc, url))
    finally:
        client.close()


def safe_error(exc: BaseException, url: str) -> str:
    """An error message fit for a page: never the password of ``url``, in any spelling."""
    text = f"{type(exc).__name__}: {exc}"
    password = urlsplit(url).password
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(secret, "***")
    return text


# --------------------------------------------------------------------- this process
def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def on_runtime_thread(runtime: NodeRuntime, read: Callable[[], T]) -> T | None:
    """Run ``read`` on the runtime's I/O thread, which owns its state (here if it is not
    running); None if that thread is too busy to answer within RUNTIME_TIMEOUT."""
    loop = runtime.loop
    if loop is None or not loop.is_running() or loop is _running_loop():
        return read()  # not started, or this thread is the runtime's: read it right here

    async def call() -> T:
        return read()

    future = asyncio.run_coroutine_threadsafe(call(), loop)
    try:
        return future.result(RUNTIME_TIMEOUT)
    except TimeoutError:
        future.cancel()
        return None


def _embedded_snapshots(layer: DPSChannelLayer | None) -> dict[str, dict]:
    server = layer.runtime.topic_server if layer is not None else None
    if server is None:
        return {}  # the runtime starts with the first socket; until then there are no stats
    snapshot = on_runtime_thread(layer.runtime, server.stats_snapshot)
    return {} if snapshot is None else {server.node: snapshot}


def local_view(layer: DPSChannelLayer | None) -> dict[str, Any] | None:
    """This process's own layer: its node, counters and local groups and channels."""
    if layer is None:
        return None
    runtime = layer.runtime

    def read() -> dict[str, Any]:
        return {"node": layer.node, "started": runtime.loop is not None,
                "runtime_loop": "server" if runtime.on_server_loop else "thread",
                "counters": dict(sorted(runtime.counters.items())),
                "groups": len(runtime.membership), "channels": len(runtime.local)}

    return on_runtime_thread(runtime, read) or {"node": layer.node, "started": True,
                                                 "error": "the layer thread did not answer"}


# ----------------------------------------------------------------------------- views
def _node_view(node: Node, probes: dict[str, _Probe], embedded: dict[str, dict], now: float,
               down_after: float) -> dict[str, Any]:
    """A node as the page shows it: up or down with its heartbeat's age, and its snapshot."""
    view: dict[str, Any] = {"name": node.name, "role": node.role, "redis": node.redacted_url,
                            "status": UP, "error": None, "reachable": None, "heartbeat_age": None,
                            "snapshot": None}
    probe = probes.get(node.redis_url)
    if probe is not None:
        view["reachable"] = probe.reachable
        if not probe.reachable:
            return {**view, "status": UNREACHABLE, "error": probe.error}
        raw = probe.snapshots.get(node.name)
    elif node.role == "ws":
        return {**view, "status": IN_PROCESS}  # the embedded cluster's WS node is this process
    else:
        raw = embedded.get(node.name)
    try:
        snapshot = stats.decode_snapshot(raw)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        return {**view, "status": BAD_STATS, "error": str(exc)}
    if snapshot is None:
        return {**view, "status": NO_STATS}
    age = max(0.0, now - float(snapshot.get("updated") or now))
    return {**view, "status": UP if age <= down_after else DOWN, "heartbeat_age": age,
            "snapshot": snapshot, "boot": snapshot.get("boot"),
            "started": snapshot.get("started"), "started_at": _when(snapshot.get("started")),
            "version": snapshot.get("version"), "connections": snapshot.get("connections"),
            "identities": snapshot.get("identities")}


def _when(epoch: Any) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if isinstance(epoch, (int, float)) else None


def _ts_view(node: Node, node_view: dict[str, Any]) -> dict[str, Any]:
    snapshot = node_view["snapshot"] or {}
    view: dict[str, Any] = {"node": node.name, "redis": node.redacted_url,
                            "status": node_view["status"], "error": node_view["error"],
                            "heartbeat_age": node_view["heartbeat_age"]}
    if not snapshot:
        return view
    rates = snapshot.get("rates", {})
    return {**view, "boot": snapshot.get("boot"), "started": snapshot.get("started"),
            "updated": snapshot.get("updated"), "stats_age": node_view["heartbeat_age"],
            "group_count": snapshot.get("group_count", 0),
            "member_count": snapshot.get("member_count", 0),
            "publishes_per_s": float(rates.get("publishes", 0.0)),
            "deliveries_per_s": float(rates.get("deliveries", 0.0)),
            "ws_nodes": snapshot.get("ws_nodes", {}),
            "counters": dict(sorted(snapshot.get("counters", {}).items())),
            "groups": snapshot.get("groups", [])}


def topic_of(group: str) -> str:
    """The topic a group carries, in any namespace (``rooms.coffee`` -> ``rooms:coffee``); DPS's
    own groups (an identity's sockets) and groups without a namespace keep their name."""
    if group.startswith(IDENTITY_GROUP_PREFIX) or "." not in group:
        return group
    return topic_for_group(group)


def _hot_topics(servers: Iterable[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    rows = []
    for server in servers:
        for entry in server.get("groups", []):
            members = {str(k): int(v) for k, v in (entry.get("members") or {}).items()}
            last = entry.get("last_activity") or now
            rows.append({"group": entry.get("group", ""), "topic": topic_of(entry.get("group", "")),
                         "owner": server["node"], "members": members,
                         "total_members": sum(members.values()),
                         "messages": int(entry.get("messages", 0)),
                         "rate": float(entry.get("rate", 0.0)),
                         "last_activity": last, "idle": max(0.0, now - last)})
    rows.sort(key=lambda row: (-row["rate"], -row["messages"], row["group"]))
    return rows


def _filtered(rows: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    needle = query.strip().lower()
    return [r for r in rows if needle in r["group"].lower() or needle in r["topic"].lower()]


def ring_view(cluster: Cluster, lookup: str = "") -> dict[str, Any]:
    """Each topic server's exact share of the hash space, plus one owner lookup."""
    # A fresh ring (a value, equal to the layer's) so lookups never churn the layer's cache.
    ring = Ring(n.name for n in cluster.ts_nodes)
    share = shares(ring)
    return {"nodes": [{"node": name, "share": share[name]} for name in ring.nodes],
            "lookup": owner_lookup(ring, lookup)}


def owner_lookup(ring: Ring, text: str) -> dict[str, Any] | None:
    """Which TS owns a topic (``topics:NAME`` -> group ``topics.NAME``, ``rooms:coffee`` ->
    ``rooms.coffee``) or a group name."""
    text = text.strip()
    if not text:
        return None
    if is_topics_topic(text):
        if not is_valid_topic(text):
            return {"query": text, "group": None, "owner": None, "error": INVALID_NAME}
        group = group_for_topic(text)
    elif ":" in text:
        if not is_valid_site_topic(text):
            return {"query": text, "group": None, "owner": None,
                    "error": "not a valid topic name (NAMESPACE:NAME)"}
        group = group_for_topic(text)
    else:
        group = text
    if not _valid_group(group):
        return {"query": text, "group": None, "owner": None,
                "error": "not a topic (NAMESPACE:NAME) or a valid group name"}
    position = ring.position_of(group)
    return {"query": text, "group": group, "owner": ring.owner_of(group), "error": None,
            "hash": f"{position:032x}", "position": position / HASH_SPACE}


def _valid_group(name: str) -> bool:
    # The Channels rule for group names: ASCII letters, digits, '-', '_', '.'; under 100 chars.
    return 0 < len(name) < 100 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)
