"""The groups a topic server owns, envelope by envelope: publishes fanned out with one delivery
per WS node with members (the Manifold idea, never one per member), joins answered behind
every delivery already sent, snapshots, presence, history and queries.

Publishes, joins, plain memberships, presence leaves and queries keep one order: while the hold
gate holds (WS nodes re-registering), or while a group's history is being read, whatever
arrives behind waits too. The rest (counts, signs of life, snapshots) applies at once.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from channel_layer import wire
from channel_layer.clock import SYSTEM_CLOCK, Clock
from channel_layer.history import HistoryStore
from channel_layer.peers import Peers
from channel_layer.presence import PresenceBook
from channel_layer.ring_follower import RingFollower, gains
from channel_layer.sequencing import OriginCursors, origin_of
from channel_layer.settings import LayerSettings
from channel_layer.topic_server.hold import HoldGate
from channel_layer.topic_server.lease import Lease
from channel_layer.topic_server.registry import GroupRegistry, WsNodeState
from channel_layer.transport import TransportError

logger = logging.getLogger("channel_layer.topic_server")
# What keeps one order (held behind a hold or a history read).
Ordered = wire.Publish | wire.Join | wire.PlainMember | wire.Untrack | wire.Query


class GroupOwner:
    def __init__(self, node: str, settings: LayerSettings, counters: Counter,
                 registry: GroupRegistry, presence: PresenceBook, history: HistoryStore,
                 cursors: OriginCursors, gate: HoldGate, peers: Peers, follower: RingFollower,
                 lease: Lease, touched: Callable[[str], None],
                 ring_differs: Callable[[], None], clock: Clock = SYSTEM_CLOCK) -> None:
        self.node = node
        self.settings = settings
        self.counters = counters
        self.registry = registry
        self.presence = presence
        self.history = history
        self.cursors = cursors
        self.gate = gate
        self.peers = peers
        self.follower = follower  # the ring and the cluster, as they change
        self.lease = lease  # this life's boot
        self._touched = touched  # (group): its row of the topic table changed
        self._ring_differs = ring_differs  # a WS node's ring is not ours: check ours soon
        self.clock = clock
        self.plain_pushes: list[tuple[str, float, bytes, int]] = []  # written by the flush
        self.history_loads: set[str] = set()  # groups to read before the held envelopes
        self.presence_sent_at = 0.0
        self._ordered = {
            wire.PUBLISH: self.handle_publish,
            wire.JOIN: self.handle_join,
            wire.PLAIN_MEMBER: self.handle_plain_member,
            wire.UNTRACK: self.handle_untrack,
            wire.QUERY: self.handle_query,
        }
        self.handlers = {
            **dict.fromkeys(self._ordered, self.in_order),
            wire.FLUSH: self.handle_flush,
            wire.MEMBER: self.handle_member,
            wire.HELLO: self.handle_hello,
            wire.SYNC: self.handle_sync,
            wire.BYE: self.handle_bye,
            wire.WAKE: wire.ignore,
        }

    # --------------------------------------------------------------------- one order
    def in_order(self, envelope: Ordered, now: float) -> None:
        """Publishes, joins and plain memberships keep one order: while publishes are held
        for a resync, the joins behind them wait too (a join never sees an earlier publish);
        so does everything behind an envelope whose group's history must be read first."""
        if self.gate.held or self.holding() or self._needs_history(envelope):
            self.gate.hold(envelope)
        else:
            self._ordered[envelope.KIND](envelope, now)

    def holding(self) -> bool:
        """Whether publishes wait: after a start, a rejoin or a ring change, until every WS
        node has sent its snapshot under this server's ring, for ``startup_sync_timeout`` /
        ``ring_settle_time`` at most. A WS node that has not yet noticed a change still
        sends to the old owner, which keeps serving it meanwhile; one that has sends here,
        and what it sends must reach the members of both."""
        return self.gate.holding(self.all_synced)

    def all_synced(self) -> bool:
        """Every WS node of the cluster file has sent a snapshot under this server's ring
        (one never heard from counts as not synced: a WS node whose ring lacks this server
        does not talk to it; a dead one costs a hold of its full length)."""
        return self.registry.all_synced((ws.name for ws in self.follower.cluster.ws_nodes),
                                        self.follower.ring_id)

    def _needs_history(self, envelope: Ordered) -> bool:
        """Whether ``envelope`` touches a group whose history is not in memory yet (noted in
        ``history_loads``)."""
        if isinstance(envelope, wire.Publish | wire.Query):
            groups = [envelope.group]
        elif isinstance(envelope, wire.Join):
            groups = [entry[0] for entry in envelope.joins if entry]
        else:
            return False
        missing = {g for g in groups if isinstance(g, str) and self.history.needs_load(g)}
        self.history_loads |= missing
        return bool(missing)

    async def release_held(self) -> None:
        """Apply the held envelopes in order once warm, reading histories they need first."""
        while True:
            self._release_held_if_warm()
            if not self.history_loads:
                return
            loads, self.history_loads = self.history_loads, set()
            await self.history.load(loads)

    def _release_held_if_warm(self) -> None:
        if self.gate.held and not self.holding():
            held = self.gate.take()
            now = self.clock.wall()
            for i, envelope in enumerate(held):
                if self._needs_history(envelope):  # it and all behind it wait for the read
                    self.gate.put_back(held[i:])
                    return
                self._ordered[envelope.KIND](envelope, now)

    # --------------------------------------------------------------------- in order
    def handle_publish(self, publish: wire.Publish, now: float) -> None:
        group, expires_at, data = publish.group, publish.expires_at, publish.message
        identity = publish.identity
        origin = publish.origin
        if origin is not None:  # a WS node's publish (channel_layer.sequencing)
            if not self.cursors.admit(origin, publish.seq):
                self.counters["publishes_superseded"] += 1  # re-sent since: that copy counts
                return
            if identity is None:
                identity = [origin, self.node, publish.seq]
        state = self.registry.groups.get(group)
        owner = self.follower.owner_of(group)
        if state is None and owner != self.node:
            # Sent by a node whose ring is behind ours, after we forgot the group: its
            # owner has the members. Forwarded once (origin None), never back and forth.
            if not publish.forwarded:
                self.peers.outbox(owner).put(wire.encode(
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
        self._touched(group)
        # Encoded once, whatever the number of WS nodes; the message bytes are not decoded.
        delivery = wire.encode(
            [wire.GROUP_DELIVER, group, expires_at, data, position, identity] if identity else
            [wire.GROUP_DELIVER, group, expires_at, data] if position is None else
            [wire.GROUP_DELIVER, group, expires_at, data, position])
        for ws_node in state.members:
            self.peers.outbox(ws_node).put(delivery)
        self.counters["node_deliveries"] += len(state.members)
        for channel, (_joined, capacity) in state.plain.items():
            self.plain_pushes.append((channel, expires_at, data, capacity))

    def handle_join(self, join: wire.Join, now: float) -> None:
        """A WS node's new member: count it, then answer behind every delivery already sent
        to that node, so the member receives only what this server fans out from now on."""
        ws_node, joins = join.ws_node, join.joins
        self.see(ws_node, join.boot, now)
        answers = []
        states: dict[str, str] = {}  # each group's presence state once per answer
        for group, count, token, *options in joins:
            self.registry.set_count(group, ws_node, int(count), now)
            answers.append([token, self._join_response(group, ws_node, options[0], now, states)]
                           if options else token)
        if self.follower.cluster.has_node(ws_node):
            self.peers.outbox(ws_node).put(wire.encode([wire.JOINED, answers, states] if states
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

    def handle_untrack(self, untrack: wire.Untrack, now: float) -> None:
        self.see(untrack.ws_node, untrack.boot, now)
        for group, ref in untrack.leaves:
            self.presence.untrack(group, ref)

    def handle_query(self, query: wire.Query, now: float) -> None:
        """``topics.api``'s questions, answered in the group's order."""
        what, group, argument = query.what, query.group, query.argument
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
        self.peers.spawn_answer(query.reply, answer)

    def handle_plain_member(self, member: wire.PlainMember, now: float) -> None:
        if member.joined_at:
            self.registry.plain_join(member.group, member.channel, member.joined_at,
                                     member.capacity, now)
        else:
            self.registry.plain_leave(member.group, member.channel)

    # --------------------------------------------------------------------- at once
    def handle_flush(self, flush: wire.Flush, now: float) -> None:
        self.flush_state()
        self.peers.spawn_answer(flush.reply, None)

    def flush_state(self) -> None:
        """Forget every group (``flush``): the WS nodes forget their members in the same call."""
        self.registry.clear()
        self.gate.clear()
        self.plain_pushes.clear()
        self.presence.clear()
        self.history.forget()

    def handle_member(self, member: wire.Member, now: float) -> None:
        self.see(member.ws_node, member.boot, now)
        self.registry.set_count(member.group, member.ws_node, member.count, now)

    def handle_hello(self, hello: wire.Hello, now: float) -> None:
        self.see(hello.ws_node, hello.boot, now)

    def handle_sync(self, sync: wire.Sync, now: float) -> None:
        ws_node, ring = sync.ws_node, sync.ring
        state = self.see(ws_node, sync.boot, now)
        # The snapshot holds the groups the sender's ring gives this server. Groups it gives
        # another server stay registered here until the change settles (RingMoves): nodes
        # that have not noticed yet still publish here.
        sender_ring = self.follower.ring_named(ring)

        def owned(group: str) -> bool:
            return sender_ring.owner_of(group) == self.node

        self.presence.replace_node(ws_node, sync.presence, owned)
        if ring is not None:
            # The ring it moved from: as this server last heard it, or else as it says
            # (None: it has not moved since it started, a new WS node is no ring change).
            previous = state.ring if state.ring is not None else sync.previous_ring
            state.ring = ring
            if sync.first_seq:  # what it sends next is numbered from here: older ones are stale
                self.cursors.restart_at(origin_of(ws_node, sync.boot), sync.first_seq)
            if ring != self.follower.ring_id:
                self._ring_differs()  # perhaps we are the one behind
            if previous is not None and previous != ring \
                    and gains(self.node, previous.split(","), ring.split(",")) \
                    and not self.all_synced():
                # A WS node moved to a ring that gives this server groups, and not every WS
                # node is there yet: hold publishes until they are (or ring_settle_time
                # passes). One that has noticed sends here what must reach the members of
                # one that has not, which are not registered here yet.
                self.gate.hold_for(self.settings.ring_settle_time)
        # Replace this node's memberships with the snapshot, keeping the state (counters) of
        # groups that stay.
        self.registry.apply_snapshot(ws_node, sync.counts, owned, now)
        state.synced = True
        self.counters["syncs"] += 1

    def handle_bye(self, bye: wire.Bye, now: float) -> None:
        self.registry.bye(bye.ws_node, bye.boot)

    def see(self, ws_node: str, boot: str, now: float) -> WsNodeState:
        """Record a sign of life; a new process behind a node name replaces the old one's
        memberships, and a node this server has not heard from is asked for a snapshot."""
        sighting = self.registry.see(ws_node, boot, now)
        if sighting.new:
            self.request_resync(ws_node)
        elif sighting.replaced_boot is not None:
            logger.info("WS node %s restarted; dropping the old process's memberships", ws_node)
            self.cursors.forget(origin_of(ws_node, sighting.replaced_boot))
        return sighting.state

    def request_resync(self, ws_node: str) -> None:
        if self.follower.cluster.has_node(ws_node):  # a name not in the file has no inbox
            self.peers.outbox(ws_node).put(wire.encode([wire.RESYNC, self.node,
                                                        self.lease.boot]))

    def request_resync_from_all(self) -> None:
        for ws in self.follower.cluster.ws_nodes:
            self.request_resync(ws.name)

    # --------------------------------------------------------------------- written out
    async def push_to_plain_channels(self) -> None:
        pushes, self.plain_pushes = self.plain_pushes, []
        for channel, expires_at, data, capacity in pushes:
            ttl_ms = int(max(expires_at - self.clock.wall(), 0.001) * 1000)
            try:
                pushed = await self.peers.transport.channel_push(
                    self.follower.owner_of(channel), channel, wire.encode([expires_at, data]),
                    capacity, ttl_ms)
            except TransportError as exc:
                self.counters["dropped_plain_channel_unreachable"] += 1
                logger.warning("could not deliver to plain channel %s: %s", channel, exc)
                continue
            if not pushed:
                self.counters["dropped_channel_full"] += 1

    def presence_wait(self) -> float:
        """Seconds until the coalesced presence changes are due."""
        return self.presence_sent_at + self.settings.presence_interval - self.clock.monotonic()

    def send_presence(self) -> None:
        """The coalesced presence changes, one message per changed group, to its members."""
        self.presence_sent_at = self.clock.monotonic()
        expires_at = self.clock.wall() + self.settings.expiry
        for group, message in self.presence.take_messages():
            state = self.registry.groups.get(group)
            if state is None:
                continue
            delivery = wire.encode([wire.GROUP_DELIVER, group, expires_at,
                                    wire.encode_message(message, self.settings.max_message_bytes)])
            for ws_node in state.members:
                self.peers.outbox(ws_node).put(delivery)
            self.counters["presence_messages"] += 1
            self.counters["node_deliveries"] += len(state.members)
