"""What keeps a node registered with the topic servers that own its groups.

- Its snapshot at each server (SYNC): its memberships there, its ring, and the number of its
  next publish; sent when a server asks (RESYNC), after a ring change, and ahead of anything
  else when a write to that server failed since the last one (the server may have dropped
  this node meanwhile).
- Its publishes, numbered per server and kept until acknowledged (``channel_layer.sequencing``),
  re-sent to the new owners when a server goes down or restarts.
- The heartbeat: it follows the ring (the shared :class:`~channel_layer.ring_follower.RingFollower`),
  tells every server of the ring that this node lives (HELLO) with the member counts that
  changed, and ends what expired locally.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from channel_layer import wire
from channel_layer.liveness import ring_id
from channel_layer.local_channels import LocalChannels
from channel_layer.membership import Membership
from channel_layer.outbox import Outbox
from channel_layer.peers import Peers
from channel_layer.ring_follower import RingFollower
from channel_layer.sequencing import PublishLog, Unacked
from channel_layer.settings import LayerSettings
from channel_layer.transport import Transport

logger = logging.getLogger("channel_layer.runtime")


class OwnerLinks:
    def __init__(self, node: str | None, settings: LayerSettings, counters: Counter,
                 follower: RingFollower, membership: Membership, local: LocalChannels) -> None:
        self.node = node
        self.settings = settings  # a newer layer instance may replace it (reconfigure)
        self.counters = counters
        self.follower = follower
        self.membership = membership
        self.local = local
        self._ts_boots: dict[str, str] = {}  # each topic server's boot, as last heard
        self._failures_synced: dict[str, int] = {}  # outbox.failed when its last SYNC left
        self._previous_ring_id: str | None = None  # the ring before its last change (SYNC)
        self._last_expiry_scan = self._last_sweep = 0.0
        # Of the runtime's current boot (start):
        self.transport: Transport | None = None
        self.peers: Peers | None = None
        self.publish_log: PublishLog | None = None  # a node's publishes until acknowledged
        self.boot = self.origin = ""

    def start(self, transport: Transport, peers: Peers, publish_log: PublishLog | None,
              boot: str, origin: str) -> None:
        """A new boot of the runtime (on a loop of its own)."""
        self.transport, self.peers, self.publish_log = transport, peers, publish_log
        self.boot, self.origin = boot, origin

    # ------------------------------------------------------------------------ publishes
    async def publish(self, group: str, expires_at: float, data: bytes) -> None:
        owner = self.follower.owner_of(group)
        outbox = self.owner_outbox(owner)
        log = self.publish_log
        if log is None:  # a process without a node: unnumbered (channel_layer.sequencing)
            await outbox.send(wire.encode([wire.PUBLISH, group, expires_at, data]))
            return
        seq, _ = log.record(owner, group, expires_at, data)
        try:
            await outbox.send(wire.encode([wire.PUBLISH, group, expires_at, data, self.origin,
                                           seq, None]))
        except BaseException:
            log.forget(owner, seq)  # its sender gets the error: it must not arrive later
            raise

    def resend(self, publishes: list[Unacked]) -> None:
        """Send again, to each group's owner now, publishes a server did not acknowledge
        (it restarted or left the ring), under new numbers and their first identity."""
        for entry in publishes:
            owner = self.follower.owner_of(entry.group)
            seq, identity = self.publish_log.record(owner, entry.group, entry.expires_at,
                                                    entry.data, entry.identity)
            self.peers.outbox(owner).put(wire.encode([wire.PUBLISH, entry.group,
                                                      entry.expires_at, entry.data,
                                                      self.origin, seq, identity]))
        self.counters["publishes_resent"] += len(publishes)

    def acknowledged(self, ts: str, ts_boot: str, origin: str, through: int) -> None:
        self._ts_boots.setdefault(ts, ts_boot)
        if origin == self.origin and self.publish_log is not None:
            self.publish_log.acknowledged(ts, int(through))

    # ------------------------------------------------------------------------ snapshots
    def owner_outbox(self, ts: str) -> Outbox:
        """The outbox to a topic server, led by a snapshot of this node's members there if a
        write to it failed since the last one: the owner may have dropped this node meanwhile
        (a partition longer than node_timeout), and a publish or join must not reach it first."""
        outbox = self.peers.outbox(ts)
        if self.node is not None and outbox.failed != self._failures_synced.get(ts, 0):
            self.send_sync(ts)
        return outbox

    def send_sync(self, ts: str, resend: bool = False) -> None:
        """This node's memberships at ``ts``, its ring and the number of its next publish
        there; with ``resend``, followed by every publish ``ts`` did not acknowledge."""
        outbox = self.peers.outbox(ts)
        log = self.publish_log
        unacked = log.take(ts) if resend and log is not None else []
        # With a resend, the server skips this node's publishes numbered below it: earlier
        # copies, all of them re-sent behind the snapshot. Without one, 0: nothing to skip
        # (a server may still hold publishes sent before the snapshot, and apply them after).
        outbox.put(self.membership.sync_envelope(ts, self.follower.ring_id,
                                                 log.next_seq(ts) if unacked else 0,
                                                 self._previous_ring_id))
        self._failures_synced[ts] = outbox.failed
        if unacked:
            self.resend(unacked)

    def sync_all(self) -> None:
        for ts in self.follower.ring.nodes:
            self.send_sync(ts)

    def answer_resync(self, ts: str, ts_boot: str) -> None:
        """A topic server asks for a snapshot. A new boot of it (a restart, or a rejoin
        after a pause that cost it its lease) lost whatever it had not acknowledged: resend."""
        known, self._ts_boots[ts] = self._ts_boots.get(ts), ts_boot
        log = self.publish_log
        self.send_sync(ts, resend=known != ts_boot and log is not None and log.pending(ts) > 0)

    def say_goodbye(self) -> None:
        for ts in self.follower.ring.nodes:
            self.peers.outbox(ts).put(wire.encode([wire.BYE, self.node, self.boot]))

    # ------------------------------------------------------------------------ heartbeat
    async def heartbeat(self) -> None:
        while True:
            # Read each time: a newer layer instance may have changed it (reconfigure).
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self.follow_ring()
                if self.node is not None:
                    self.beat(time.time())
            except Exception:  # never let housekeeping die
                logger.exception("heartbeat failed")

    def beat(self, now: float) -> None:
        for ts in self.follower.ring.nodes:
            outbox = self.peers.outbox(ts)
            if outbox.failed != self._failures_synced.get(ts, 0):
                self.send_sync(ts)  # some update may have been lost: send the truth
            else:
                outbox.put(wire.encode([wire.HELLO, self.node, self.boot]))
        self.membership.flush_counts()
        settings = self.settings  # the newest layer instance's: intervals follow them
        if now - self._last_expiry_scan >= min(max(settings.group_expiry / 10,
                                                   settings.heartbeat_interval), 60.0):
            # A scan reads every membership (once a second, it was 5% of a loaded WS node's
            # py-spy samples with 400 of them). A membership ends at most a tenth of
            # group_expiry (and a minute) late.
            self._last_expiry_scan = now
            self._expire_memberships(now)
        if now - self._last_sweep >= max(settings.expiry / 4, settings.heartbeat_interval):
            # A sweep reads every channel of the node (every socket has one): every quarter
            # of ``expiry`` is soon enough to free what expired, which receive() drops anyway.
            self._last_sweep = now
            self.local.sweep(now, max(settings.expiry, 1.0) * 2)

    def _expire_memberships(self, now: float) -> None:
        for group, channel in self.membership.expired(now, self.settings.group_expiry):
            self.counters["memberships_expired"] += 1
            self.peers.spawn(self.membership.discard(group, channel))

    async def follow_ring(self, announce: bool = True) -> None:
        """Follow the ring: the cluster file's topic servers, less those out of it
        (``channel_layer.liveness``). On a change every server of the new ring gets this
        node's snapshot and ring (a gaining server holds publishes until every WS node has
        sent one, see ``TopicServer``), pending joins go to their new owners, and what a
        server that went down did not acknowledge is re-sent to the new owners."""
        follower = self.follower
        cluster = follower.changed_cluster() or follower.cluster
        if cluster.embedded:
            return  # its one topic server lives in this process
        self.transport.use_cluster(cluster)  # (it still reaches nodes that were removed)
        change = await follower.follow(self.transport, cluster)
        if change is None:
            return
        old_ring, ring = change.old, change.new
        if announce:
            self._previous_ring_id = ring_id(old_ring)
        if change.went_down:
            logger.warning("topic server(s) %s down (lease lapsed); ring is now %s",
                           sorted(change.went_down), list(ring.nodes))
            self.counters["failovers"] += len(change.went_down)
        else:
            logger.info("ring changed to %s", list(ring.nodes))
        if not announce or self.node is None:
            return
        self.membership.reroute_pending(old_ring, ring)
        for ts in ring.nodes:
            self.send_sync(ts)
        log = self.publish_log
        for ts in sorted(set(old_ring.nodes) - set(ring.nodes)):
            if ts in follower.down:  # (a server removed from the file drains and acknowledges)
                self.resend(log.take(ts))
