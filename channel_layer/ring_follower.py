"""Following the ring: the cluster file's topic servers, less those out of it by the lease rule
(``channel_layer.liveness``), for the topic server and the node runtime alike.

A :class:`RingFollower` holds the current cluster, ring and verdicts; :meth:`RingFollower.follow`
reads the leases once and returns what changed, if anything (:class:`RingChange`). What a change
means is the caller's: a WS node re-registers and re-sends, a topic server holds or hands over.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from channel_layer.cluster import Cluster, ClusterConfigError, ClusterFileWatcher
from channel_layer.liveness import down_servers, live_ring, not_started, ring_id, with_leases_seen
from channel_layer.ring import Ring
from channel_layer.transport import Transport

logger = logging.getLogger("channel_layer.ring_follower")
_KNOWN_RINGS = 8  # other nodes' rings kept built (ring_named): a change has two or three


@dataclass(frozen=True)
class RingChange:
    old: Ring
    new: Ring
    went_down: frozenset[str]  # servers whose lease lapsed since the last follow


def gains(node: str, old: Iterable[str], new: Iterable[str]) -> bool:
    """Whether ``node`` gains groups when a ring of servers ``old`` becomes ``new`` (it joins,
    or another server leaves). One that only loses groups never holds: it has every
    registration, old and new, until the change settles."""
    old, new = set(old), set(new)
    return node in new and (node not in old or bool(old - new))


class RingFollower:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ring = Ring(n.name for n in cluster.ts_nodes)  # until the first follow
        self.ring_id = ring_id(self.ring)
        self.down: set[str] = set()  # configured servers out of the ring (liveness)
        self.seen_leased: set[str] = set()  # servers seen holding a lease (liveness)
        self._watcher = ClusterFileWatcher(cluster)
        self._rings: dict[str, Ring] = {}  # other nodes' rings, by ring_id

    def owner_of(self, group: str) -> str:
        return self.ring.owner_of(group)

    def changed_cluster(self) -> Cluster | None:
        """The cluster file's new content, if it changed (a bad edit is logged and ignored)."""
        try:
            return self._watcher.poll()
        except ClusterConfigError as exc:
            logger.error("ignoring the changed cluster file: %s", exc)
            return None

    async def follow(self, transport: Transport, cluster: Cluster,
                     skip: str | None = None) -> RingChange | None:
        """Read the leases of ``cluster``'s servers (but ``skip``: a server does not judge
        itself) and take ``cluster`` and its ring from the same moment, after the read: no
        caller routes by one and sends by the other. The change, or None."""
        configured = [n.name for n in cluster.ts_nodes]
        leases = await transport.read_leases([n for n in configured if n != skip])
        self.cluster = cluster
        unstarted = not_started(configured, leases, self.seen_leased)
        if unstarted - self.down:
            logger.info("topic server(s) %s listed but not started (no lease yet): kept out of "
                        "the ring until they take one", sorted(unstarted - self.down))
        down = down_servers(configured, leases, self.down, self.seen_leased)
        went_down = frozenset(down - self.down - unstarted)
        self.down = down
        self.seen_leased = with_leases_seen(self.seen_leased, leases)
        ring = live_ring(configured, down, self.ring)
        if ring == self.ring:
            return None
        change = RingChange(self.ring, ring, went_down)
        self.ring, self.ring_id = ring, ring_id(ring)
        return change

    def ring_named(self, name: str | None) -> Ring:
        """The ring another node names (its ``ring_id``; None or ours: ours)."""
        if not name or name == self.ring_id:
            return self.ring
        ring = self._rings.get(name)
        if ring is None:
            if len(self._rings) > _KNOWN_RINGS:
                self._rings.clear()
            ring = self._rings[name] = Ring(name.split(","))
        return ring
