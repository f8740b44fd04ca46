"""Cluster membership: which nodes exist, their role and their home Redis.

One source for every node: the JSON file named by ``DPS_CLUSTER`` or, failing that, the
``DPS_CLUSTER`` Django setting (a dict of the same shape)::

    {"nodes": [{"name": "ws-a", "role": "ws", "redis": "redis://127.0.0.1:7001/0"},
               {"name": "ts-a", "role": "ts", "redis": "redis://127.0.0.1:7002/0"}]}

``DPS_NODE`` (environment, or the setting of the same name) says which node this process is.
With no cluster configured at all the process is the *embedded* development cluster: one WS
node and one in-process topic server talking through memory, no Redis.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WS = "ws"
TS = "ts"
ROLES = (WS, TS)
EMBEDDED_WS = "local"
EMBEDDED_TS = "local-ts"

# Node names appear inside channel names ("specific.ws-a!xyz"), so they may not hold "."
# or "!", and they must be valid in Channels names.
NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}", re.ASCII)
REDIS_SCHEMES = ("redis", "rediss", "unix")


class ClusterConfigError(Exception):
    """The cluster configuration is unusable; the message says why and where."""


_PASSWORD = re.compile(r"(//[^/@:]*:)[^/@]*@")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log, even if malformed)."""
    return _PASSWORD.sub(r"\1***@", url, count=1)


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    redis_url: str | None  # None only in the embedded (memory) cluster

    @property
    def redacted_url(self) -> str:
        return redact_url(self.redis_url) if self.redis_url else "memory"


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    source: str  # where the configuration came from, for error messages
    embedded: bool = False
    path: str | None = None  # the cluster file, when there is one (it may change at runtime)

    @property
    def ws_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == WS)

    @property
    def ts_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == TS)

    def node(self, name: str) -> Node:
        for candidate in self.nodes:
            if candidate.name == name:
                return candidate
        known = ", ".join(n.name for n in self.nodes)
        raise ClusterConfigError(f"unknown node {name!r} in {self.source} (known nodes: {known})")

    def has_node(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)


def embedded_cluster() -> Cluster:
    return Cluster(
        nodes=(Node(EMBEDDED_WS, WS, None), Node(EMBEDDED_TS, TS, None)),
        source="embedded development default",
        embedded=True,
    )


def _validate_url(url: Any, where: str) -> str:
    if not isinstance(url, str) or not url:
        raise ClusterConfigError(f"{where}: 'redis' must be a non-empty URL string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a non-numeric port
    except ValueError as exc:
        raise ClusterConfigError(f"{where}: malformed Redis URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ClusterConfigError(
            f"{where}: malformed Redis URL {redact_url(url)!r}: scheme must be one of {REDIS_SCHEMES}"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ClusterConfigError(f"{where}: malformed Redis URL {redact_url(url)!r}: no host")
    return url


def parse_cluster(data: Any, source: str) -> Cluster:
    """Validate a decoded cluster description and build a :class:`Cluster`."""
    if not isinstance(data, Mapping) or not isinstance(data.get("nodes"), list):
        raise ClusterConfigError(f"{source}: expected an object with a 'nodes' list")
    nodes: list[Node] = []
    seen: set[str] = set()
    for index, raw in enumerate(data["nodes"]):
        where = f"{source}: nodes[{index}]"
        if not isinstance(raw, Mapping):
            raise ClusterConfigError(f"{where}: expected an object")
        name, role = raw.get("name"), raw.get("role")
        if not isinstance(name, str) or not NODE_NAME.fullmatch(name):
            raise ClusterConfigError(
                f"{where}: node name {name!r} must be 1-40 ASCII letters, digits, '-' or '_'"
            )
        if name in seen:
            raise ClusterConfigError(f"{source}: duplicate node name {name!r}")
        if role not in ROLES:
            raise ClusterConfigError(f"{where}: role of {name!r} must be 'ws' or 'ts', not {role!r}")
        seen.add(name)
        nodes.append(Node(name, role, _validate_url(raw.get("redis"), f"{where} ({name})")))
    cluster = Cluster(tuple(nodes), source)
    if not cluster.ts_nodes:
        raise ClusterConfigError(f"{source}: a cluster needs at least one 'ts' node")
    return cluster


def load_cluster(setting: Mapping | None = None, env: Mapping[str, str] = os.environ) -> Cluster:
    """Load the cluster from ``$DPS_CLUSTER`` (a file), else the setting, else embedded."""
    path = env.get("DPS_CLUSTER")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ClusterConfigError(f"DPS_CLUSTER={path}: cannot read: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ClusterConfigError(f"DPS_CLUSTER={path}: not valid JSON: {exc}") from None
        return replace(parse_cluster(data, f"DPS_CLUSTER={path}"), path=path)
    if setting:
        return parse_cluster(setting, "settings.DPS_CLUSTER")
    return embedded_cluster()


def current_node_name(cluster: Cluster, setting: str | None = None,
                      env: Mapping[str, str] = os.environ) -> str | None:
    """The node this process is, or None for a send-only client of a configured cluster."""
    if cluster.embedded:
        return EMBEDDED_WS
    name = env.get("DPS_NODE") or setting
    if name:
        cluster.node(name)  # raises for an unknown node
    return name


class ClusterFileWatcher:
    """Notices edits of a cluster file, so nodes can follow a ring change without restarting."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._stamp = self._read_stamp()

    def _read_stamp(self) -> tuple[float, int] | None:
        if not self.cluster.path:
            return None
        try:
            stat = os.stat(self.cluster.path)
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def poll(self) -> Cluster | None:
        """The new cluster if the file changed and is valid; None otherwise (errors raise)."""
        stamp = self._read_stamp()
        if stamp is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        cluster = load_cluster(env={"DPS_CLUSTER": self.cluster.path})
        if cluster.nodes == self.cluster.nodes:
            return None
        self.cluster = cluster
        return cluster


def ts_serving_line(name: str) -> str:
    """What a topic server prints once it serves its inbox: ``runcluster`` waits for it."""
    return f"topic server {name} serving"
