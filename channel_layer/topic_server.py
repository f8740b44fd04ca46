"""The topic server: owner of the groups the ring gives it.

For every group it owns it knows which WS nodes hold members and how many, and turns each
publish into **one** delivery per such WS node (the Manifold idea), never one per member. It
reads its inbox in order, one envelope at a time, so every member of a group sees the same
order. Membership is tied to the WS node that holds it: a WS node that falls silent for
``node_timeout`` loses its memberships; a WS node that restarts replaces them; a topic server
that restarts asks every WS node for a snapshot (RESYNC / SYNC) instead of waiting for clients
to rejoin. It also holds the presence (``presence``) and history (``history``) of the groups it
owns. A topic server removed from the cluster file *drains*: it keeps serving publishes
from WS nodes that have not yet noticed, until every WS node has (see :meth:`is_drained`),
then stops as on SIGTERM and its process exits 0.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from channel_layer import stats, wire
from channel_layer.cluster import TS, Cluster, ClusterConfigError, ClusterFileWatcher, Node
from channel_layer.history import HistoryPatterns, HistoryStore
from channel_layer.liveness import down_servers, live_ring, ring_id, with_leases_seen
from channel_layer.outbox import Outbox
from channel_layer.presence import PresenceBook
from channel_layer.resp import CommandPipe
from channel_layer.ring import Ring
from channel_layer.sequencing import OriginCursors, node_of_origin, origin_of
from channel_layer.settings import LayerSettings
from channel_layer.transport import LEASE_LAPSED, Transport, TransportError

logger = logging.getLogger("channel_layer.topic_server")


@dataclass
class GroupState:
    members: dict[str, int] = field(default_factory=dict)  # WS node -> its local member count
    # Plain channels in the group (their membership lives here, see channel_layer.membership):
    # channel -> (joined at, its capacity).
    plain: dict[str, tuple[float, int]] = field(default_factory=dict)
    messages: int = 0
    created: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)


@dataclass
class WsNodeState:
    boot: str
    last_seen: float
    synced: bool = False
    ring: str | None = None  # the ring its last snapshot was sent under (liveness.ring_id)


class TopicServer:
    def __init__(self, cluster: Cluster, node: str, transport: Transport,
                 settings: LayerSettings | None = None) -> None:
        self.cluster = cluster
        self.node = node
        self.transport = transport
        self.settings = settings or LayerSettings()
        self.ring = Ring(n.name for n in cluster.ts_nodes)  # without the servers that are down
        self.ring_id = ring_id(self.ring)
        self._down: set[str] = set()
        self._seen_leased: set[str] = set()  # other servers seen holding a lease (liveness)
        self.boot = os.urandom(6).hex()
        self.cursors = OriginCursors()  # each WS node's publish numbers (sequencing)
        self._lease_renewed = 0.0  # time.monotonic() of the last renewal Redis confirmed
        self._drop_unowned_at = 0.0  # after a ring change: when to forget groups it lost
        self._ring_check: asyncio.Task | None = None
        self.started_serving = False
        self._rings: dict[str, Ring] = {}  # other nodes' rings, by ring_id (handle_sync)
        self.started = time.time()
        self.groups: dict[str, GroupState] = {}
        self.ws_nodes: dict[str, WsNodeState] = {}
        self.counters: Counter[str] = Counter()
        self._outboxes: dict[str, Outbox] = {}
        self._warm_until = 0.0
        # Publishes, joins and plain memberships held back, in order, while WS nodes resync
        # after a start.
        self._held: list[list] = []
        self._plain_pushes: list[tuple[str, float, bytes, int]] = []
        self._answers: set[asyncio.Task] = set()
        self._watcher = ClusterFileWatcher(cluster)
        self._ordered = {
            wire.PUBLISH: self.handle_publish,
            wire.JOIN: self.handle_join,
            wire.PLAIN_MEMBER: self.handle_plain_member,
            wire.UNTRACK: self.handle_untrack,
            wire.QUERY: self.handle_query,
        }
        self.presence = PresenceBook()
        self._presence_sent_at = 0.0
        self.history = HistoryStore(
            HistoryPatterns(self.settings.history), self.settings.prefix,
            self.settings.history_meta_ttl, self.settings.history_cache_groups,
            self._topic_table_client, self._other_ts_clients)
        self._history_loads: set[str] = set()  # groups to read before the held envelopes
        self._other_clients: dict[str, aioredis.Redis] = {}
        self.topic_table = stats.TopicTable(self.settings.stats_interval)
        self._rates = stats.RateWindow()
        self._last_rates: dict[str, float] = {}
        self._stats_client: aioredis.Redis | None = None  # own Redis: history (not embedded)
        self._own_node: Node = cluster.node(node)  # its Redis, kept while it drains
        self.removed_at: float | None = None  # time.time() it left the cluster file
        self._stats_pipe: CommandPipe | None = None  # own Redis: the topic table's writes
        self._handlers = {
            wire.PUBLISH: self._in_order,
            wire.JOIN: self._in_order,
            wire.PLAIN_MEMBER: self._in_order,
            wire.UNTRACK: self._in_order,
            wire.QUERY: self._in_order,
            wire.FLUSH: self.handle_flush,
            wire.MEMBER: self.handle_member,
            wire.HELLO: self.handle_hello,
            wire.SYNC: self.handle_sync,
            wire.BYE: self.handle_bye,
            wire.WAKE: wire.ignore,
        }

    # ----------------------------------------------------------------------------- running
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; the current batch always completes first."""
        logger.info("topic server %s starting (boot %s)", self.node, self.boot)
        await self._renew_lease()
        self.started_serving = True
        await self._follow_ring()
        self._request_resync_from_all()
        self._warm_until = time.monotonic() + self.settings.startup_sync_timeout
        loop = asyncio.get_running_loop()
        housekeeping = loop.create_task(self._housekeeping(stop))
        waker = loop.create_task(self._wake_reader_on(stop))
        try:
            while not stop.is_set():
                block = min(self.settings.read_block_ms, 200) if self._held else \
                    self.settings.read_block_ms
                if self.presence.changed:  # wake up when the coalesced diffs are due
                    block = max(1, min(block, int(self._presence_wait() * 1000) + 1))
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
                if time.monotonic() - self._lease_renewed > self._lease_margin():
                    # Perhaps paused past our lease: what was read may have been re-sent
                    # to others meanwhile. Ask Redis before acting on it.
                    if not await self._renew_lease():
                        continue
                now = time.time()
                for _, data in entries:
                    self.handle(data, now)
                await self._release_held()
                await self._flush()
        finally:
            housekeeping.cancel()
            waker.cancel()
            # Stop receiving first (publishes from now on wait in the backlog for the next
            # run), then handle what had already been pushed to this run.
            for _, data in await self.transport.stop_reading(self.node):
                self.handle(data, time.time())
            self._warm_until = 0.0  # stopping: fan out what was held for the resync, now
            await self._release_held()
            self._presence_sent_at = 0.0  # and send the last presence changes
            await self._flush()
            await self.transport.ack(self.node)  # a clean restart re-reads nothing
            self._send_acks()  # all of it is written: the WS nodes may forget it
            for outbox in self._outboxes.values():
                await outbox.drain()
            if self.removed_at is not None:  # drained: out of every ring at once
                await self._drop_lease()
            await self._publish_stats()
            for client in [self._stats_client, *self._other_clients.values()]:
                if client is not None:
                    await client.aclose()
            if self._stats_pipe is not None:
                await self._stats_pipe.close()
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
        checked_at = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(interval)
            if not await self._renew_lease():
                # It had lapsed: rejoined as a new boot, with no view left to excuse.
                checked_at = time.monotonic()
                continue
            await self._follow_ring()
            self._send_acks()
            if self._drop_unowned_at and time.monotonic() >= self._drop_unowned_at:
                self._drop_unowned_groups()
            # Measured from the last check to just before the judgement, every await of the
            # round included: a pause that began in a Redis round trip rather than in the
            # sleep would otherwise go unnoticed, and the nodes be judged on a stale view.
            now = time.monotonic()
            overslept, checked_at = now - checked_at - interval, now
            if overslept > 2 * self.settings.heartbeat_interval:
                self.excuse_pause(overslept, time.time())
            self.expire_silent_nodes(time.time())
            self.expire_plain_members(time.time())
            if self.is_drained(time.time()):
                logger.info("topic server %s drained (%d group(s) left); stopping", self.node,
                            len(self.groups))
                stop.set()  # the same clean stop as SIGTERM: the process exits 0
                return
            if time.monotonic() - last_stats >= self.settings.stats_interval:
                last_stats = time.monotonic()
                try:
                    await self._publish_stats()
                except Exception as exc:  # stats are best effort; serving is not
                    logger.warning("could not publish stats: %s", exc)

    async def _flush(self) -> None:
        handled = self.cursors.snapshot()  # acknowledged once all of it is written
        if self.presence.changed and self._presence_wait() <= 0:
            self._send_presence()
        # History first: a broadcast's offset reaches a client only once Redis holds it.
        await self.history.write()
        if self._plain_pushes:
            await self._push_to_plain_channels()
        for outbox in self._outboxes.values():
            await outbox.drain()
        self.cursors.written(handled)
        self._send_acks(self.settings.ack_every)  # a busy origin's log stays short

    def _send_acks(self, at_least: int = 1) -> None:
        """Tell each WS node which of its publishes are fanned out and written: it keeps
        them until then, to re-send if this server dies (channel_layer.sequencing). Once a
        heartbeat, and at once for an origin with ``at_least`` publishes unacknowledged."""
        for origin, through in self.cursors.acks_due(at_least):
            node = node_of_origin(origin)
            if self.cluster.has_node(node):
                self._outbox(node).put(wire.encode([wire.ACK, self.node, self.boot, origin,
                                                    through]))

    # ---------------------------------------------------------------------------- the lease
    def _lease_margin(self) -> float:
        """How old the last renewal may be before the lease may have lapsed."""
        return max(self.settings.ts_failover_after - self.settings.heartbeat_interval / 2,
                   self.settings.heartbeat_interval)

    async def _renew_lease(self) -> bool:
        """Renew the lease (``channel_layer.liveness``); False when it had lapsed, so every
        node has taken this server out of its ring and re-sent elsewhere what it had not
        acknowledged: then it rejoins as a new boot, with nothing of its old state."""
        try:
            before = await self.transport.renew_lease(
                self.node, self.boot, int(self.settings.ts_failover_after * 1000))
        except TransportError as exc:
            # Our own Redis is down: nobody can read the lease either, so nobody takes us
            # out of the ring for it (the inbox read reports the outage).
            logger.debug("could not renew the lease of %s: %s", self.node, exc)
            return True
        self._lease_renewed = time.monotonic()
        if before == LEASE_LAPSED and self.started_serving:
            await self._rejoin()
            return False
        return True

    async def _drop_lease(self) -> None:
        try:
            await self.transport.drop_lease(self.node, self.boot)
        except TransportError as exc:
            logger.warning("could not give up the lease of %s: %s", self.node, exc)

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
        self.boot = os.urandom(6).hex()
        try:
            await self.transport.renew_lease(self.node, self.boot,
                                             int(self.settings.ts_failover_after * 1000))
            self._lease_renewed = time.monotonic()
        except TransportError as exc:  # the next renewal tries again
            logger.warning("could not take the lease of %s again: %s", self.node, exc)
        self._request_resync_from_all()
        self._warm_until = time.monotonic() + self.settings.startup_sync_timeout

    async def _push_to_plain_channels(self) -> None:
        pushes, self._plain_pushes = self._plain_pushes, []
        for channel, expires_at, data, capacity in pushes:
            ttl_ms = int(max(expires_at - time.time(), 0.001) * 1000)
            try:
                pushed = await self.transport.channel_push(
                    self.ring.owner_of(channel), channel, wire.encode([expires_at, data]),
                    capacity, ttl_ms)
            except TransportError as exc:
                self.counters["dropped_plain_channel_unreachable"] += 1
                logger.warning("could not deliver to plain channel %s: %s", channel, exc)
                continue
            if not pushed:
                self.counters["dropped_channel_full"] += 1

    def _outbox(self, node: str) -> Outbox:
        outbox = self._outboxes.get(node)
        if outbox is None:
            outbox = self._outboxes[node] = Outbox(self.transport, node,
                                                   self.settings.outbox_limit)
        return outbox

    def _presence_wait(self) -> float:
        return self._presence_sent_at + self.settings.presence_interval - time.monotonic()

    def _send_presence(self) -> None:
        """The coalesced presence changes, one message per changed group, to its members."""
        self._presence_sent_at = time.monotonic()
        expires_at = time.time() + self.settings.expiry
        for group, message in self.presence.take_messages():
            state = self.groups.get(group)
            if state is None:
                continue
            delivery = wire.encode([wire.GROUP_DELIVER, group, expires_at,
                                    wire.encode_message(message, self.settings.max_message_bytes)])
            for ws_node in state.members:
                self._outbox(ws_node).put(delivery)
            self.counters["presence_messages"] += 1
            self.counters["node_deliveries"] += len(state.members)

    def _other_ts_clients(self) -> list[aioredis.Redis]:
        """Clients of the other topic servers' Redis (where a moved group's history was)."""
        own = self.cluster.node(self.node).redis_url
        clients = []
        for node in self.cluster.nodes:
            if node.role != TS or node.name == self.node or node.redis_url in (None, own):
                continue
            client = self._other_clients.get(node.redis_url)
            if client is None:
                client = self._other_clients[node.redis_url] = aioredis.Redis.from_url(
                    node.redis_url, socket_connect_timeout=self.settings.connect_timeout,
                    socket_timeout=self.settings.connect_timeout)
            clients.append(client)
        return clients

    # --------------------------------------------------------------------------- envelopes
    def handle(self, data: bytes, now: float) -> None:
        """Apply one inbox envelope. Bad input is counted and skipped, never fatal."""
        wire.dispatch(data, self._handlers, self.counters, now)

    def _in_order(self, envelope: list, now: float) -> None:
        """Publishes, joins and plain memberships keep one order: while publishes are held
        for a resync, the joins behind them wait too (a join never sees an earlier publish);
        so does everything behind an envelope whose group's history must be read first."""
        if self._held or self._holding():
            self._held.append(envelope)
        elif self._needs_history(envelope):
            self._held.append(envelope)
        else:
            self._ordered[envelope[0]](envelope, now)

    def _needs_history(self, envelope: list) -> bool:
        """Whether ``envelope`` touches a group whose history is not in memory yet (noted in
        ``_history_loads``)."""
        kind = envelope[0]
        if kind == wire.PUBLISH or kind == wire.QUERY:
            groups = [envelope[1] if kind == wire.PUBLISH else envelope[2]]
        elif kind == wire.JOIN:
            groups = [entry[0] for entry in envelope[3]]
        else:
            return False
        missing = {g for g in groups if isinstance(g, str) and self.history.needs_load(g)}
        self._history_loads |= missing
        return bool(missing)

    def handle_publish(self, envelope: list, now: float) -> None:
        _, group, expires_at, data, *numbered = envelope
        identity = None
        if numbered:  # a WS node's publish (channel_layer.sequencing)
            origin, seq, identity = numbered
            if origin is not None:
                if not self.cursors.admit(origin, seq):
                    self.counters["publishes_superseded"] += 1  # re-sent since: that copy counts
                    return
                if identity is None:
                    identity = [origin, self.node, seq]
        state = self.groups.get(group)
        if state is None and self.ring.owner_of(group) != self.node:
            # Sent by a node whose ring is behind ours, after we forgot the group: its
            # owner has the members. Forwarded once (origin None), never back and forth.
            if not numbered or numbered[0] is not None:
                self._outbox(self.ring.owner_of(group)).put(wire.encode(
                    [wire.PUBLISH, group, expires_at, data, None, None, identity]))
                self.counters["publishes_forwarded"] += 1
                return
        self.counters["published"] += 1
        if expires_at < now:
            self.counters["expired"] += 1
            return
        # Kept even with nobody listening: whoever comes back recovers it.
        position = self.history.append(group, data, now)
        if state is None:
            self.counters["published_no_members"] += 1
            return
        state.messages += 1
        state.last_activity = now
        self.topic_table.touch(group)
        # Encoded once, whatever the number of WS nodes; the message bytes are not decoded.
        delivery = wire.encode(
            [wire.GROUP_DELIVER, group, expires_at, data, position, identity] if identity else
            [wire.GROUP_DELIVER, group, expires_at, data] if position is None else
            [wire.GROUP_DELIVER, group, expires_at, data, position])
        for ws_node in state.members:
            self._outbox(ws_node).put(delivery)
        self.counters["node_deliveries"] += len(state.members)
        for channel, (_joined, capacity) in state.plain.items():
            self._plain_pushes.append((channel, expires_at, data, capacity))

    def handle_join(self, envelope: list, now: float) -> None:
        """A WS node's new member: count it, then answer behind every delivery already sent
        to that node, so the member receives only what this server fans out from now on."""
        _, ws_node, boot, joins = envelope
        self._see(ws_node, boot, now)
        answers = []
        states: dict[str, str] = {}  # each group's presence state once per answer
        for group, count, token, *options in joins:
            self._set_count(group, ws_node, int(count), now)
            answers.append([token, self._join_response(group, ws_node, options[0], now, states)]
                           if options else token)
        if self.cluster.has_node(ws_node):
            self._outbox(ws_node).put(wire.encode([wire.JOINED, answers, states] if states
                                                  else [wire.JOINED, answers]))
        self.counters["joins"] += len(joins)

    def _join_response(self, group: str, ws_node: str, options: dict, now: float,
                       states: dict[str, str]) -> dict:
        """What a join with options (``DPSChannelLayer.group_join``) learns, exactly at its
        place in the group's order: the presence state and the history position, with every
        broadcast after the position it recovers from."""
        response: dict = {}
        track = options.get("presence")
        if track is not None:
            key, ref, meta = track
            response["presence"] = group  # its state is in the answer's ``states``
            if group not in states:
                states[group] = self.presence.state_json(group)
            self.presence.track(group, ws_node, key, ref, meta)
        position = self.history.position(group)
        if position is not None:
            recover = options.get("recover")
            recovery = self.history.since(group, int(recover[0]), str(recover[1]), now) \
                if recover else None
            response["history"] = {"position": position,
                                   "recovered": bool(recovery and recovery.recovered),
                                   "messages": recovery.messages if recovery else []}
            if recover:
                self.counters["recoveries" if recovery.recovered else "recoveries_failed"] += 1
        return response

    def handle_untrack(self, envelope: list, now: float) -> None:
        _, ws_node, boot, leaves = envelope
        self._see(ws_node, boot, now)
        for group, ref in leaves:
            self.presence.untrack(group, ref)

    def handle_query(self, envelope: list, now: float) -> None:
        """``topics.api``'s questions, answered in the group's order."""
        _, what, group, argument, reply = envelope
        if what == "presence":
            answer: object = self.presence.current(group)
        elif what == "history":
            history = self.history.loaded(group)
            answer = None if history is None else {
                "position": self.history.position(group),
                "messages": [[o, data] for o, at, data in history.recent
                             if o > int(argument or 0) and at >= now - history.policy.ttl]}
        else:
            answer = {"error": f"unknown query {what!r}"}
        self._spawn_answer(reply, answer)

    def handle_plain_member(self, envelope: list, now: float) -> None:
        _, group, channel, joined_at, capacity = envelope
        state = self.groups.get(group)
        if joined_at:
            if state is None:
                state = self.groups[group] = GroupState(created=now, last_activity=now)
            state.plain[channel] = (joined_at, int(capacity))
        elif state is not None:
            state.plain.pop(channel, None)
            self._forget_if_empty(group, state)

    def handle_flush(self, envelope: list, now: float) -> None:
        self.flush_state()
        self._spawn_answer(envelope[1], None)

    def _spawn_answer(self, reply: str, answer: object) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(reply, answer))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, reply: str, answer: object) -> None:
        try:
            await self.transport.channel_push(
                self.node, reply, wire.encode_message(answer, self.settings.max_message_bytes),
                1, int(self.settings.confirm_timeout * 2000))
        except TransportError as exc:
            logger.warning("could not answer a flush: %s", exc)

    def flush_state(self) -> None:
        """Forget every group (``flush``): the WS nodes forget their members in the same call."""
        self.groups.clear()
        self._held.clear()
        self._plain_pushes.clear()
        self.presence.clear()
        self.history.forget()

    def handle_member(self, envelope: list, now: float) -> None:
        _, group, ws_node, boot, count = envelope
        self._see(ws_node, boot, now)
        self._set_count(group, ws_node, int(count), now)

    def handle_hello(self, envelope: list, now: float) -> None:
        _, ws_node, boot = envelope
        self._see(ws_node, boot, now)

    def handle_sync(self, envelope: list, now: float) -> None:
        _, ws_node, boot, _ts, snapshot, *rest = envelope
        state = self._see(ws_node, boot, now)
        ring = rest[1] if len(rest) >= 3 else None
        # The snapshot holds the groups the sender's ring gives this server. Groups it gives
        # another server stay registered here until the change settles
        # (_drop_unowned_groups): nodes that have not noticed yet still publish here.
        owned = self._owned_under(ring)
        self.presence.replace_node(ws_node, rest[0] if rest else {}, owned)
        if ring is not None:
            first_seq = rest[2]
            # The ring it moved from: as this server last heard it, or else as it says
            # (None: it has not moved since it started, a new WS node is no ring change).
            previous = state.ring if state.ring is not None else \
                (rest[3] if len(rest) > 3 else None)
            state.ring = ring
            if first_seq:  # what it sends next is numbered from here: older copies are stale
                self.cursors.restart_at(origin_of(ws_node, boot), int(first_seq))
            if ring != self.ring_id:
                self._check_ring_soon()  # perhaps we are the one behind
            if previous is not None and previous != ring \
                    and self._gains(previous.split(","), ring.split(",")) \
                    and not self._all_synced():
                # A WS node moved to a ring that gives this server groups, and not every WS
                # node is there yet: hold publishes until they are (or ring_settle_time
                # passes). One that has noticed sends here what must reach the members of
                # one that has not, which are not registered here yet.
                self._warm_until = max(self._warm_until,
                                       time.monotonic() + self.settings.ring_settle_time)
        # Replace this node's memberships with the snapshot, keeping the state (counters) of
        # groups that stay.
        for group in [g for g, s in self.groups.items() if ws_node in s.members
                      and g not in snapshot and owned(g)]:
            self._set_count(group, ws_node, 0, now)
        for group, count in snapshot.items():
            self._set_count(group, ws_node, int(count), now)
        state.synced = True
        self.counters["syncs"] += 1

    def _owned_under(self, ring: str | None) -> Callable[[str], bool]:
        """Whether a group is this server's under a sender's ring (its ``ring_id``)."""
        if not ring or ring == self.ring_id:
            return lambda group: self.ring.owner_of(group) == self.node
        other = self._rings.get(ring)
        if other is None:
            if len(self._rings) > 8:
                self._rings.clear()
            other = self._rings[ring] = Ring(ring.split(","))
        return lambda group: other.owner_of(group) == self.node

    def handle_bye(self, envelope: list, now: float) -> None:
        _, ws_node, boot = envelope
        state = self.ws_nodes.get(ws_node)
        if state is not None and state.boot == boot:
            self._drop_node_members(ws_node)
            del self.ws_nodes[ws_node]

    # -------------------------------------------------------------------------- membership
    def _see(self, ws_node: str, boot: str, now: float) -> WsNodeState:
        """Record a sign of life; a new process behind a node name replaces the old one's
        memberships, and a node this server has not heard from is asked for a snapshot."""
        state = self.ws_nodes.get(ws_node)
        if state is None:
            state = self.ws_nodes[ws_node] = WsNodeState(boot, now)
            self._request_resync(ws_node)
        elif state.boot != boot:
            logger.info("WS node %s restarted; dropping the old process's memberships", ws_node)
            self._drop_node_members(ws_node)
            self.cursors.forget(origin_of(ws_node, state.boot))
            self.ws_nodes[ws_node] = state = WsNodeState(boot, now, synced=True)
        state.last_seen = now
        return state

    def _set_count(self, group: str, ws_node: str, count: int, now: float) -> None:
        self.topic_table.touch(group)  # the admin's topic table rewrites this group
        if count > 0:
            state = self.groups.get(group)
            if state is None:
                state = self.groups[group] = GroupState(created=now, last_activity=now)
            state.members[ws_node] = count
        else:
            self.presence.drop_node(ws_node, {group})  # no members there: nobody present
            state = self.groups.get(group)
            if state is not None:
                state.members.pop(ws_node, None)
                self._forget_if_empty(group, state)

    def _forget_if_empty(self, group: str, state: GroupState) -> None:
        if not state.members and not state.plain:
            del self.groups[group]  # forget groups nobody is in

    def _drop_node_members(self, ws_node: str) -> None:
        for group in [g for g, s in self.groups.items() if ws_node in s.members]:
            self._set_count(group, ws_node, 0, 0.0)

    def expire_plain_members(self, now: float) -> None:
        horizon = now - self.settings.group_expiry
        for group, state in list(self.groups.items()):
            for channel in [c for c, (joined, _) in state.plain.items() if joined < horizon]:
                del state.plain[channel]
                self.counters["memberships_expired"] += 1
            self._forget_if_empty(group, state)

    def excuse_pause(self, paused_for: float, now: float) -> None:
        """This process did not run for ``paused_for`` seconds (SIGSTOP, a frozen VM, a starved
        CPU): the WS nodes' heartbeats of that time are still unread in its inbox, so their
        silence is its own. Judge them from now (a fresh ``node_timeout``) and ask each for a
        snapshot, rather than dropping every membership on a stale view."""
        logger.warning("topic server %s did not run for %.1fs; checking its %d WS node(s) again "
                       "before dropping any", self.node, paused_for, len(self.ws_nodes))
        for state in self.ws_nodes.values():
            state.last_seen = max(state.last_seen, now)
        self._request_resync_from_all()
        self.counters["pauses_excused"] += 1

    def expire_silent_nodes(self, now: float) -> None:
        for ws_node, state in list(self.ws_nodes.items()):
            if now - state.last_seen > self.settings.node_timeout:
                logger.warning("WS node %s silent for %.1fs; dropping its memberships",
                               ws_node, now - state.last_seen)
                self._drop_node_members(ws_node)
                del self.ws_nodes[ws_node]
                self.counters["nodes_expired"] += 1

    async def _follow_ring(self) -> None:
        """Follow the cluster file and the other servers' leases (``channel_layer.liveness``):
        the same ring as every WS node's. On a change, hold publishes until the WS nodes
        have re-registered under it, keep serving the groups this server lost until the
        change has settled, and hand over the plain channels' memberships."""
        try:
            cluster = self._watcher.poll()
        except ClusterConfigError as exc:
            logger.error("ignoring the changed cluster file: %s", exc)
            cluster = None
        if cluster is not None:
            self._use_cluster(cluster)
        configured = [n.name for n in self.cluster.ts_nodes]
        others = [n for n in configured if n != self.node]
        leases = await self.transport.read_leases(others)
        self._down = down_servers(others, leases, self._down, self._seen_leased)
        self._seen_leased = with_leases_seen(self._seen_leased, leases)
        ring = live_ring(configured, self._down, self.ring)
        if ring == self.ring:
            return
        old_ring, self.ring, self.ring_id = self.ring, ring, ring_id(ring)
        logger.info("ring is now %s%s", list(ring.nodes),
                    f" ({', '.join(sorted(self._down))} down)" if self._down else "")
        settle = self.settings.ring_settle_time
        if self._gains(old_ring.nodes, ring.nodes):
            # Their members on WS nodes that have not noticed yet are not registered here.
            self._warm_until = max(self._warm_until, time.monotonic() + settle)
        self._drop_unowned_at = time.monotonic() + settle
        self._hand_over_plain_members()

    def _gains(self, old: Iterable[str], new: Iterable[str]) -> bool:
        """Whether this server gains groups when a ring of servers ``old`` becomes ``new``
        (it joins, or another server leaves). One that only loses groups never holds: it
        has every registration, old and new, until the change settles."""
        old, new = set(old), set(new)
        return self.node in new and (self.node not in old or bool(old - new))

    def _check_ring_soon(self) -> None:
        if self._ring_check is None or self._ring_check.done():
            self._ring_check = asyncio.get_running_loop().create_task(self._follow_ring())

    def _use_cluster(self, cluster: Cluster) -> None:
        self.cluster = cluster
        if cluster.has_node(self.node):
            self.transport.use_cluster(cluster)
            self.removed_at = None  # (put back before it finished draining: serve on)
            return
        # Removed: keep reaching our own Redis (inbox, stats) while draining.
        self.transport.use_cluster(Cluster(cluster.nodes + (self._own_node,), cluster.source,
                                           path=cluster.path))
        if self.removed_at is None:
            self.removed_at = time.time()
            logger.info("topic server %s is no longer in the cluster file; draining (%d group(s)"
                        " still registered here)", self.node, len(self.groups))

    def _drop_unowned_groups(self) -> None:
        """The ring change has settled: forget the groups another server owns now (their
        WS nodes have registered there)."""
        self._drop_unowned_at = 0.0
        owner_of = self.ring.owner_of
        for group in [g for g in self.groups if owner_of(g) != self.node]:
            self.presence.drop_group(group)
            del self.groups[group]
            self.counters["groups_handed_over"] += 1

    def is_drained(self, now: float) -> bool:
        """Whether a removed server is done: no group is left here, or every WS node has
        noticed the removal (a node that has stops its heartbeats here, so none was heard for
        two heartbeat intervals), or ``node_timeout`` after the removal at the latest."""
        if self.removed_at is None:
            return False
        last_heard = max([self.removed_at, *(s.last_seen for s in self.ws_nodes.values())])
        return (not self.groups or now - last_heard > 2 * self.settings.heartbeat_interval
                or now - self.removed_at >= self.settings.node_timeout)

    def _hand_over_plain_members(self) -> None:
        """Plain channels' memberships live at the owner: send those of groups this server no
        longer owns to their new owner."""
        for group, state in list(self.groups.items()):
            owner = self.ring.owner_of(group)
            if owner == self.node or not state.plain:
                continue
            for channel, (joined, capacity) in state.plain.items():
                self._outbox(owner).put(
                    wire.encode([wire.PLAIN_MEMBER, group, channel, joined, capacity]))
            state.plain.clear()
            self._forget_if_empty(group, state)

    def _request_resync(self, ws_node: str) -> None:
        if self.cluster.has_node(ws_node):  # a name not in the cluster file has no inbox
            self._outbox(ws_node).put(wire.encode([wire.RESYNC, self.node, self.boot]))

    def _request_resync_from_all(self) -> None:
        for ws in self.cluster.ws_nodes:
            self._request_resync(ws.name)

    def _holding(self) -> bool:
        """Whether publishes wait: after a start, a rejoin or a ring change, until every WS
        node has sent its snapshot under this server's ring, for ``startup_sync_timeout`` /
        ``ring_settle_time`` at most. A WS node that has not yet noticed a change still
        sends to the old owner, which keeps serving it meanwhile; one that has sends here,
        and what it sends must reach the members of both."""
        return time.monotonic() < self._warm_until and not self._all_synced()

    def _all_synced(self) -> bool:
        """Every WS node of the cluster file has sent a snapshot under this server's ring
        (one never heard from counts as not synced: a WS node whose ring lacks this server
        does not talk to it; a dead one costs a hold of its full length)."""
        for ws in self.cluster.ws_nodes:
            state = self.ws_nodes.get(ws.name)
            if state is None or not state.synced or state.ring not in (None, self.ring_id):
                return False
        return True

    async def _release_held(self) -> None:
        """Apply the held envelopes in order once warm, reading histories they need first."""
        while True:
            self._release_held_if_warm()
            if not self._history_loads:
                return
            loads, self._history_loads = self._history_loads, set()
            await self.history.load(loads)

    def _release_held_if_warm(self) -> None:
        if self._held and not self._holding():
            held, self._held = self._held, []
            now = time.time()
            for i, envelope in enumerate(held):
                if self._needs_history(envelope):  # it and all behind it wait for the read
                    self._held = held[i:] + self._held
                    return
                self._ordered[envelope[0]](envelope, now)

    # ------------------------------------------------------------------------------- stats
    def stats_snapshot(self) -> dict:
        """This server's snapshot (schema: :mod:`channel_layer.stats`)."""
        # The hottest groups over the last minute, then idle ones up to the limit (taken as
        # they come: no scan of every group; the admin's topics list has them all).
        limit = self.settings.stats_top_groups
        hottest = [(name, count, self.groups[name]) for name, count in
                   self.topic_table.hottest(limit) if name in self.groups]
        listed = {name for name, _, _ in hottest}
        hottest += itertools.islice(((name, 0, state) for name, state in self.groups.items()
                                     if name not in listed), max(0, limit - len(hottest)))
        refused = Counter(outbox_refused=sum(o.refused for o in self._outboxes.values()))
        counters = dict(self.counters + self.transport.counters + refused)
        counters.update(self.history.counters)
        return {
            "role": "ts",
            "node": self.node,
            "boot": self.boot,
            "started": self.started,
            "updated": time.time(),
            "version": stats.VERSION,
            "group_count": len(self.groups),
            "member_count": sum(sum(s.members.values()) for s in self.groups.values()),
            "ws_nodes": {name: {"last_seen": s.last_seen, "synced": s.synced}
                         for name, s in self.ws_nodes.items()},
            "counters": counters,
            "rates": self._last_rates,
            "groups": [
                {"group": name, "members": dict(s.members), "messages": s.messages,
                 "rate": count / stats.WINDOW_SECONDS, "created": s.created,
                 "last_activity": s.last_activity}
                for name, count, s in hottest
            ],
        }

    async def _publish_stats(self) -> None:
        batch = self.topic_table.collect(self.groups)  # first: the snapshot's hottest use it
        self._last_rates = self._rates.add(time.time(), {
            "publishes": self.counters["published"],
            "deliveries": self.counters["node_deliveries"]})
        ttl = stats.snapshot_ttl(self.settings.stats_interval)
        try:
            await self.transport.put_stats(self.node,
                                           stats.encode_snapshot(self.stats_snapshot()), ttl)
            pipe = self._topic_table_pipe()
            if pipe is not None:  # None: the embedded cluster's admin reads it in process
                await stats.write_topic_batch(
                    pipe, stats.TopicKeys.of(self.settings.prefix, self.node), batch,
                    max(ttl, int(stats.WINDOW_SECONDS)))
        except Exception:
            # Redis may hold part of the batch, or none: rewrite the whole table next time.
            self.topic_table = stats.TopicTable(self.settings.stats_interval)
            self.counters["stats_write_errors"] += 1
            raise

    def _topic_table_client(self) -> aioredis.Redis | None:
        url = self._own_node.redis_url  # (still reachable while a removed server drains)
        if url is not None and self._stats_client is None:
            self._stats_client = aioredis.Redis.from_url(
                url, socket_connect_timeout=self.settings.connect_timeout,
                socket_timeout=self.settings.connect_timeout)
        return self._stats_client

    def _topic_table_pipe(self) -> CommandPipe | None:
        """The topic table's writes: bare RESP, no redis-py packing per command."""
        url = self._own_node.redis_url
        if url is not None and self._stats_pipe is None:
            self._stats_pipe = CommandPipe(url, self.settings.connect_timeout)
        return self._stats_pipe
