"""The topic server's run: it reads its inbox in order, one batch at a time, hands each
envelope to the owner of its groups (:mod:`.owner`), writes what the batch produced, and keeps
house every heartbeat: its lease (:mod:`.lease`), the ring (:mod:`.ring_moves`), the WS nodes'
liveness (:mod:`.registry`) and its stats (:mod:`.stats_publisher`).

Membership is tied to the WS node that holds it: a WS node that falls silent for
``node_timeout`` loses its memberships; a WS node that restarts replaces them; a topic server
that restarts asks every WS node for a snapshot (RESYNC / SYNC) instead of waiting for clients
to rejoin.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter

from channel_layer import wire
from channel_layer.clock import SYSTEM_CLOCK, Clock
from channel_layer.cluster import Cluster
from channel_layer.history import HistoryPatterns, HistoryStore
from channel_layer.peers import Peers
from channel_layer.presence import PresenceBook
from channel_layer.ring_follower import RingFollower
from channel_layer.sequencing import OriginCursors, node_of_origin
from channel_layer.settings import LayerSettings
from channel_layer.topic_server.hold import HoldGate
from channel_layer.topic_server.lease import Lease, PauseDetector
from channel_layer.topic_server.owner import GroupOwner
from channel_layer.topic_server.registry import GroupRegistry, GroupState, WsNodeState
from channel_layer.topic_server.ring_moves import RingMoves
from channel_layer.topic_server.stats_publisher import ServerRedis, StatsPublisher
from channel_layer.transport import Transport, TransportError

logger = logging.getLogger("channel_layer.topic_server")


class TopicServer:
    def __init__(self, cluster: Cluster, node: str, transport: Transport,
                 settings: LayerSettings | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.node = node
        self.transport = transport
        self.settings = settings = settings or LayerSettings()
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.started_serving = False
        self.follower = RingFollower(cluster)  # the ring without the servers that are out
        self.lease = Lease(transport, node, settings, clock)
        self.cursors = OriginCursors()  # each WS node's publish numbers (sequencing)
        self.presence = PresenceBook()
        self.registry = GroupRegistry(touched=self._touched, node_left=self._node_left)
        self.redis = ServerRedis(cluster.node(node), settings)  # its Redis, kept while it drains
        self.history = HistoryStore(
            HistoryPatterns(settings.history), settings.prefix, settings.history_meta_ttl,
            settings.history_cache_groups, self.redis.own,
            lambda: self.redis.others(self.follower.cluster))
        self.stats = StatsPublisher(node, settings, transport, self.registry, self.redis, clock)
        self.gate = HoldGate(clock)
        self.peers = Peers(transport, node, settings)
        self.ring_moves = RingMoves(node, cluster.node(node), settings, self.counters, transport,
                                    self.follower, self.registry, self.presence, self.gate,
                                    self.peers, clock)
        self.owner = GroupOwner(node, settings, self.counters, self.registry, self.presence,
                                self.history, self.cursors, self.gate, self.peers,
                                self.follower, self.lease, self._touched,
                                self.ring_moves.check_soon, clock)

    # What the operator's view reads.
    @property
    def cluster(self) -> Cluster:
        return self.follower.cluster

    @property
    def groups(self) -> dict[str, GroupState]:
        return self.registry.groups

    @property
    def ws_nodes(self) -> dict[str, WsNodeState]:
        return self.registry.ws_nodes

    @property
    def topic_table(self):  # channel_layer.stats.TopicTable (rebuilt after a failed write)
        return self.stats.topic_table

    def _touched(self, group: str) -> None:
        self.stats.topic_table.touch(group)  # the admin's topic table rewrites this group

    def _node_left(self, ws_node: str, group: str) -> None:
        self.presence.drop_node(ws_node, {group})  # no members there: nobody present

    # ----------------------------------------------------------------------------- running
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; the current batch always completes first."""
        logger.info("topic server %s starting (boot %s)", self.node, self.lease.boot)
        await self._renew_lease()
        self.started_serving = True
        await self.ring_moves.follow()
        self.owner.request_resync_from_all()
        self.gate.restart(self.settings.startup_sync_timeout)
        loop = asyncio.get_running_loop()
        housekeeping = loop.create_task(self._housekeeping(stop))
        waker = loop.create_task(self._wake_reader_on(stop))
        try:
            while not stop.is_set():
                block = min(self.settings.read_block_ms, 200) if self.gate.held else \
                    self.settings.read_block_ms
                if self.presence.changed:  # wake up when the coalesced diffs are due
                    block = max(1, min(block, int(self.owner.presence_wait() * 1000) + 1))
                try:
                    entries = await self.transport.read(self.node, self.settings.read_batch,
                                                        block)
                except TransportError as exc:
                    # Our own Redis is down or restarting: keep trying; what senders publish
                    # meanwhile waits in the backlog once Redis is back.
                    self.counters["inbox_read_errors"] += 1
                    logger.warning("cannot read the inbox of %s: %s", self.node, exc)
                    await asyncio.sleep(self.settings.read_retry_interval)
                    continue
                if self.lease.may_have_lapsed():
                    # Perhaps paused past our lease: what was read may have been re-sent
                    # to others meanwhile. Ask Redis before acting on it.
                    if not await self._renew_lease():
                        continue
                now = self.clock.wall()
                for _, data in entries:
                    self.handle(data, now)
                await self.owner.release_held()
                await self._flush()
        finally:
            housekeeping.cancel()
            waker.cancel()
            await self._stop_serving()

    async def _stop_serving(self) -> None:
        # Stop receiving first (publishes from now on wait in the backlog for the next
        # run), then handle what had already been pushed to this run.
        for _, data in await self.transport.stop_reading(self.node):
            self.handle(data, self.clock.wall())
        self.gate.open()  # stopping: fan out what was held for the resync, now
        await self.owner.release_held()
        self.owner.presence_sent_at = 0.0  # and send the last presence changes
        await self._flush()
        await self.transport.ack(self.node)  # a clean restart re-reads nothing
        self._send_acks()  # all of it is written: the WS nodes may forget it
        await self.peers.drain()
        if self.ring_moves.removed_at is not None:  # drained: out of every ring at once
            await self.lease.drop()
        await self._publish_stats()
        await self.redis.close()
        logger.info("topic server %s stopped", self.node)

    async def _wake_reader_on(self, stop: asyncio.Event) -> None:
        """Stop promptly: end the blocking inbox read with an entry of our own."""
        await stop.wait()
        try:
            await self.transport.push(self.node, [wire.encode([wire.WAKE])])
        except Exception as exc:  # the read times out by itself anyway
            logger.debug("could not wake the inbox reader: %s", exc)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        interval = min(self.settings.heartbeat_interval, self.settings.stats_interval)
        last_stats = 0.0
        pauses = PauseDetector(interval, self.settings.heartbeat_interval, self.clock)
        while not stop.is_set():
            await asyncio.sleep(interval)
            if not await self._renew_lease():
                pauses.restart()  # it had lapsed: rejoined as a new boot, no view to excuse
                continue
            await self.ring_moves.follow()
            self._send_acks()
            self.ring_moves.settle()
            overslept = pauses.overslept()  # (see PauseDetector: the whole round counts)
            if overslept is not None:
                self.excuse_pause(overslept, self.clock.wall())
            self.expire_silent_nodes(self.clock.wall())
            self.expire_plain_members(self.clock.wall())
            if self.ring_moves.is_drained(self.clock.wall()):
                logger.info("topic server %s drained (%d group(s) left); stopping", self.node,
                            len(self.groups))
                stop.set()  # the same clean stop as SIGTERM: the process exits 0
                return
            if self.clock.monotonic() - last_stats >= self.settings.stats_interval:
                last_stats = self.clock.monotonic()
                try:
                    await self._publish_stats()
                except Exception as exc:  # stats are best effort; serving is not
                    logger.warning("could not publish stats: %s", exc)

    async def _flush(self) -> None:
        handled = self.cursors.snapshot()  # acknowledged once all of it is written
        if self.presence.changed and self.owner.presence_wait() <= 0:
            self.owner.send_presence()
        # History first: a broadcast's offset reaches a client only once Redis holds it.
        await self.history.write()
        if self.owner.plain_pushes:
            await self.owner.push_to_plain_channels()
        await self.peers.drain()
        self.cursors.written(handled)
        self._send_acks(self.settings.ack_every)  # a busy origin's log stays short

    def _send_acks(self, at_least: int = 1) -> None:
        """Tell each WS node which of its publishes are fanned out and written: it keeps
        them until then, to re-send if this server dies (channel_layer.sequencing). Once a
        heartbeat, and at once for an origin with ``at_least`` publishes unacknowledged."""
        for origin, through in self.cursors.acks_due(at_least):
            node = node_of_origin(origin)
            if self.cluster.has_node(node):
                self.peers.outbox(node).put(wire.encode([wire.ACK, self.node, self.lease.boot,
                                                         origin, through]))

    # ---------------------------------------------------------------------------- the lease
    async def _renew_lease(self) -> bool:
        """Renew the lease (``channel_layer.liveness``); False when it had lapsed, so every
        node has taken this server out of its ring and re-sent elsewhere what it had not
        acknowledged: then it rejoins as a new boot, with nothing of its old state."""
        if await self.lease.renew() or not self.started_serving:
            return True
        await self._rejoin()
        return False

    async def _rejoin(self) -> None:
        logger.warning("topic server %s lost its lease (it did not run for over %gs): the "
                       "cluster failed it over; rejoining as a new boot with no stale state",
                       self.node, self.settings.ts_failover_after)
        self.counters["lease_lapses"] += 1
        stale = await self.transport.stop_reading(self.node)
        self.counters["discarded_after_lapse"] += len(stale)
        self.flush_state()
        self.ws_nodes.clear()
        self.cursors.clear()
        await self.lease.take_as_new_boot()
        self.owner.request_resync_from_all()
        self.gate.restart(self.settings.startup_sync_timeout)

    # --------------------------------------------------------------------------- envelopes
    def handle(self, data: bytes, now: float) -> None:
        """Apply one inbox envelope. Bad input is counted and skipped, never fatal."""
        wire.dispatch(data, self.owner.handlers, self.counters, now)

    def flush_state(self) -> None:
        """Forget every group (``flush``): the WS nodes forget their members in the same call."""
        self.owner.flush_state()

    # ----------------------------------------------------------------------- WS nodes' life
    def excuse_pause(self, paused_for: float, now: float) -> None:
        """This process did not run for ``paused_for`` seconds (SIGSTOP, a frozen VM, a starved
        CPU): the WS nodes' heartbeats of that time are still unread in its inbox, so their
        silence is its own. Judge them from now (a fresh ``node_timeout``) and ask each for a
        snapshot, rather than dropping every membership on a stale view."""
        logger.warning("topic server %s did not run for %.1fs; checking its %d WS node(s) again "
                       "before dropping any", self.node, paused_for, len(self.ws_nodes))
        self.registry.excuse(now)
        self.owner.request_resync_from_all()
        self.counters["pauses_excused"] += 1

    def expire_silent_nodes(self, now: float) -> None:
        for ws_node, silence in self.registry.expire_silent_nodes(now,
                                                                  self.settings.node_timeout):
            logger.warning("WS node %s silent for %.1fs; dropping its memberships",
                           ws_node, silence)
            self.counters["nodes_expired"] += 1

    def expire_plain_members(self, now: float) -> None:
        expired = self.registry.expire_plain_members(now, self.settings.group_expiry)
        if expired:
            self.counters["memberships_expired"] += expired

    # ------------------------------------------------------------------------------- stats
    def _counters(self) -> dict[str, int]:
        refused = Counter(outbox_refused=self.peers.refused)
        counters = dict(self.counters + self.transport.counters + refused)
        counters.update(self.history.counters)
        return counters

    def stats_snapshot(self) -> dict:
        """This server's snapshot (schema: :mod:`channel_layer.stats`)."""
        return self.stats.snapshot(self.lease.boot, self._counters())

    async def _publish_stats(self) -> None:
        try:
            await self.stats.publish(self.lease.boot, self._counters)
        except Exception:
            self.counters["stats_write_errors"] += 1
            raise
