"""A topic server's side of ring changes: it follows the cluster file and the other servers'
leases (the shared :class:`~channel_layer.ring_follower.RingFollower`, the same ring as every WS
node's), and on a change holds publishes until the WS nodes have re-registered under it (if it
gains groups), keeps serving the groups it lost until the change has settled, then forgets
them, and hands the plain channels' memberships to their new owners.

A server removed from the cluster file *drains*: it keeps serving publishes from WS nodes that
have not yet noticed, until every WS node has (:meth:`RingMoves.is_drained`), then stops as on
SIGTERM and its process exits 0.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter

from channel_layer import wire
from channel_layer.clock import SYSTEM_CLOCK, Clock
from channel_layer.cluster import Cluster, Node
from channel_layer.peers import Peers
from channel_layer.presence import PresenceBook
from channel_layer.ring_follower import RingFollower, gains
from channel_layer.settings import LayerSettings
from channel_layer.topic_server.hold import HoldGate
from channel_layer.topic_server.registry import GroupRegistry
from channel_layer.transport import Transport

logger = logging.getLogger("channel_layer.topic_server")


class RingMoves:
    def __init__(self, node: str, own_node: Node, settings: LayerSettings, counters: Counter,
                 transport: Transport, follower: RingFollower, registry: GroupRegistry,
                 presence: PresenceBook, gate: HoldGate, peers: Peers,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.node = node
        self.own_node = own_node  # its Redis, kept while it drains
        self.settings = settings
        self.counters = counters
        self.transport = transport
        self.follower = follower
        self.registry = registry
        self.presence = presence
        self.gate = gate
        self.peers = peers
        self.clock = clock
        self.removed_at: float | None = None  # clock.wall() when it left the cluster file
        self._drop_unowned_at = 0.0  # after a ring change: when to forget groups it lost
        self._check: asyncio.Task | None = None

    async def follow(self) -> None:
        """Follow the cluster file and the other servers' leases (``channel_layer.liveness``).
        On a change, hold publishes until the WS nodes have re-registered under it, keep
        serving the groups this server lost until the change has settled, and hand over the
        plain channels' memberships."""
        cluster = self.follower.changed_cluster()
        if cluster is not None:
            self._use_cluster(cluster)
        change = await self.follower.follow(self.transport, cluster or self.follower.cluster,
                                            skip=self.node)
        if change is None:
            return
        down = self.follower.down
        logger.info("ring is now %s%s", list(change.new.nodes),
                    f" ({', '.join(sorted(down))} down)" if down else "")
        settle = self.settings.ring_settle_time
        if gains(self.node, change.old.nodes, change.new.nodes):
            # Their members on WS nodes that have not noticed yet are not registered here.
            self.gate.hold_for(settle)
        self._drop_unowned_at = self.clock.monotonic() + settle
        self.hand_over_plain_members()

    def check_soon(self) -> None:
        """Follow the ring now, beside the inbox reader (a WS node named another ring)."""
        if self._check is None or self._check.done():
            self._check = asyncio.get_running_loop().create_task(self.follow())

    def settle(self) -> None:
        """Once the last change has settled, forget the groups another server owns now."""
        if self._drop_unowned_at and self.clock.monotonic() >= self._drop_unowned_at:
            self._drop_unowned_groups()

    def _use_cluster(self, cluster: Cluster) -> None:
        if cluster.has_node(self.node):
            self.transport.use_cluster(cluster)
            self.removed_at = None  # (put back before it finished draining: serve on)
            return
        # Removed: keep reaching our own Redis (inbox, stats) while draining.
        self.transport.use_cluster(Cluster(cluster.nodes + (self.own_node,), cluster.source,
                                           path=cluster.path))
        if self.removed_at is None:
            self.removed_at = self.clock.wall()
            logger.info("topic server %s is no longer in the cluster file; draining (%d group(s)"
                        " still registered here)", self.node, len(self.registry.groups))

    def _drop_unowned_groups(self) -> None:
        """The ring change has settled: forget the groups another server owns now (their
        WS nodes have registered there)."""
        self._drop_unowned_at = 0.0
        for group in self.registry.drop_groups(lambda g: self.follower.owner_of(g) == self.node):
            self.presence.drop_group(group)
            self.counters["groups_handed_over"] += 1

    def is_drained(self, now: float) -> bool:
        """Whether a removed server is done: no group is left here, or every WS node has
        noticed the removal (a node that has stops its heartbeats here, so none was heard for
        two heartbeat intervals), or ``node_timeout`` after the removal at the latest."""
        if self.removed_at is None:
            return False
        last_heard = max([self.removed_at,
                          *(s.last_seen for s in self.registry.ws_nodes.values())])
        return (not self.registry.groups
                or now - last_heard > 2 * self.settings.heartbeat_interval
                or now - self.removed_at >= self.settings.node_timeout)

    def hand_over_plain_members(self) -> None:
        """Plain channels' memberships live at the owner: send those of groups this server no
        longer owns to their new owner."""
        owner_of = self.follower.owner_of
        for group, channel, joined, capacity in self.registry.take_plain_members(
                lambda g: owner_of(g) == self.node):
            self.peers.outbox(owner_of(group)).put(
                wire.encode([wire.PLAIN_MEMBER, group, channel, joined, capacity]))
