"""A node's runtime: the part of a process that talks to Redis.

It lives on one event loop for the process's life (``loop_home``: the server's loop under
daphne and uvicorn, else its own I/O thread), and every layer call runs there (``call``).
The runtime composes the node's local channels (``local_channels``), its membership
(``membership``: registration with owners, snapshots, ring moves), the inbox reader and the
heartbeat. One process holds one runtime per node: every ``DPSChannelLayer`` instance of that
node in the process shares it (``acquire_runtime``), because a topic server knows a node by its
name and boot, and two runtimes of one name would look like a node restarting over and over.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from channel_layer import wire
from channel_layer.cluster import EMBEDDED_TS, WS, Cluster, ClusterConfigError, ClusterFileWatcher
from channel_layer.liveness import down_servers, live_ring, not_started, ring_id, with_leases_seen
from channel_layer.local_channels import LocalChannels, Wakeups
from channel_layer.loop_home import LoopHome
from channel_layer.membership import Membership
from channel_layer.outbox import Outbox
from channel_layer.ring import Ring
from channel_layer.sequencing import DeliveryFilter, PublishLog, Unacked, origin_of
from channel_layer.settings import LayerSettings
from channel_layer.topic_server import TopicServer
from channel_layer.transport import MemoryTransport, RedisTransport, Transport, TransportError

logger = logging.getLogger("channel_layer.runtime")
T = TypeVar("T")
# The key a group message with history carries: its [offset, epoch] at the owner.
POSITION_KEY = "dps_position"


def node_of_channel(channel: str) -> str | None:
    """``specific.ws-a!x1y2`` -> ``ws-a``; None for a plain channel name."""
    bang = channel.find("!")
    if bang < 0:
        return None
    return channel[channel.rfind(".", 0, bang) + 1: bang]


class NotAReceivingNode(RuntimeError):
    """This process has no DPS_NODE, so it can send but hold no channels or groups."""


class NodeRuntime:
    def __init__(self, cluster: Cluster, node: str | None, settings: LayerSettings,
                 capacity_for: Callable[[str], int]) -> None:
        self.cluster = cluster
        self.node = node
        self.settings = settings
        self.capacity_for = capacity_for
        self.ring = Ring(n.name for n in cluster.ts_nodes)  # without the servers that are down
        self.ring_id = ring_id(self.ring)
        self._previous_ring_id: str | None = None  # the ring before its last change (SYNC)
        self._down: set[str] = set()  # configured servers out of the ring (liveness)
        self._seen_leased: set[str] = set()  # servers seen holding a lease (liveness)
        self.counters: Counter[str] = Counter()
        self.origin = ""  # this node's name and boot: what its publishes are numbered under
        self.publish_log: PublishLog | None = None  # a node's publishes until acknowledged
        self.deliveries = DeliveryFilter(self.counters, settings.dedup_window)
        self._ts_boots: dict[str, str] = {}  # each topic server's boot, as last heard
        self.local = LocalChannels(self.counters)
        # Runtime loop only (the layer calls it through ``call``).
        self.membership = Membership(node, self.counters, self.owner_of, self._owner_outbox)
        self.boot = ""
        self.home = LoopHome(node or "client", settings.runtime_loop, self._boot,
                             self._close_transport, self._forget_loop)
        self.transport: Transport | None = None
        self.topic_server: TopicServer | None = None  # embedded cluster only
        self._outboxes: dict[str, Outbox] = {}
        self._failures_synced: dict[str, int] = {}
        self._plain_buffers: dict[str, deque[bytes]] = {}  # only channels with messages
        self._plain_lock = threading.Lock()
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()  # answers to other nodes' requests
        self.registry_key: tuple | None = None  # see acquire_runtime
        self._stop: asyncio.Event | None = None
        self._watcher = ClusterFileWatcher(cluster)
        self._last_expiry_scan = self._last_sweep = 0.0

    # --------------------------------------------------------------------------- lifecycle
    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self.home.loop

    @property
    def on_server_loop(self) -> bool:
        return self.home.on_server_loop

    def ensure_started(self) -> None:
        self.home.ensure_started()

    async def call(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the runtime's loop and wait for it from whatever loop is calling."""
        return await self.home.call(coro)

    async def _boot(self) -> None:
        self.boot = self.membership.boot = os.urandom(6).hex()
        if self.node is not None:
            self.origin = origin_of(self.node, self.boot)
            self.publish_log = PublishLog(self.origin, self.settings.unacked_limit,
                                          self.counters, self.settings.unacked_bytes_limit)
        self._stop = asyncio.Event()
        if self.cluster.embedded:
            self.transport = MemoryTransport(self.settings.prefix, self.settings.inbox_cap)
        else:
            self.transport = RedisTransport(self.cluster, self.settings.prefix,
                                            self.settings.inbox_cap, self.settings.connect_timeout)
            if self.node is not None:
                await self.transport.ping(self.node)  # fail at start, not at first message
            await self._follow_ring(announce=False)  # route around servers already down
            if self.node is not None:
                await self._start_clean()
        logger.info("layer runtime of %s runs on %s", self.node or "a sending process",
                    "the server's loop" if self.home.on_server_loop else "its own I/O thread")
        loop = asyncio.get_running_loop()
        if self.node is not None:
            self._tasks.append(loop.create_task(self._read_inbox()))
        if self.node is not None or not self.cluster.embedded:
            # (a process without a node follows the ring too: a Celery worker lives long)
            self._tasks.append(loop.create_task(self._heartbeat()))
        if self.cluster.embedded:
            self.topic_server = TopicServer(self.cluster, EMBEDDED_TS, self.transport,
                                            self.settings)
            self._tasks.append(loop.create_task(self.topic_server.run(self._stop)))

    async def _start_clean(self) -> None:
        """A WS node's first boot in this process skips its backlog: what is there was sent
        to a previous process of this name (deliveries for its dead members, answers to its
        joins), not to be drained at start (issue 9). Taken before this process sends
        anything, so nothing meant for it is skipped; a topic server keeps its backlog."""
        key = (self.cluster.node(self.node).redis_url, self.settings.prefix, self.node)
        if key in _started_clean or self.cluster.node(self.node).role != WS:
            return
        _started_clean.add(key)
        discarded = await self.transport.discard_backlog(self.node)
        if discarded:
            self.counters["backlog_discarded_at_start"] += discarded
            logger.info("%s skipped %d envelopes its previous process left in its backlog",
                        self.node, discarded)
            # What was skipped may hold a topic server's RESYNC (it asks every WS node when
            # it starts, and holds joins until they answer): answer every one with this
            # process's (empty) snapshot, which also ends the old process's memberships.
            for ts in self.ring.nodes:
                self._send_sync(ts)

    def _forget_loop(self) -> None:
        """Drop what belonged to a loop that is closed: its tasks and connections went with it."""
        self.transport = None
        self._tasks.clear()
        self._outboxes.clear()
        self.membership.forget_loop()  # futures of that loop

    async def close(self) -> None:
        await self.home.close(self._shutdown)

    async def _shutdown(self) -> None:
        if self.node is not None:
            for ts in self.ring.nodes:
                self._outbox(ts).put(wire.encode([wire.BYE, self.node, self.boot]))
        self._stop.set()
        if self.node is not None:
            try:  # end the reader's blocking read now rather than cancelling it mid-command
                await self.transport.push(self.node, [wire.encode([wire.WAKE])])
                await asyncio.wait(self._tasks[:1], timeout=1.0)
            except TransportError:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for outbox in list(self._outboxes.values()):
            await outbox.drain()
        self._outboxes.clear()
        self.membership.clear()
        await self._close_transport()

    async def _close_transport(self) -> None:
        if self.transport is not None:
            await self.transport.close()

    def _outbox(self, node: str) -> Outbox:
        outbox = self._outboxes.get(node)
        if outbox is None:
            outbox = self._outboxes[node] = Outbox(self.transport, node,
                                                   self.settings.outbox_limit)
        return outbox

    def reconfigure(self, settings: LayerSettings, capacity_for: Callable[[str], int]) -> None:
        """A newer layer instance of this node: its settings apply from now on (where the
        runtime loop runs is fixed once started)."""
        if settings != self.settings:
            logger.info("layer settings of %s changed by a new layer instance",
                        self.node or "this process")
        self.settings = settings
        self.capacity_for = capacity_for
        self.home.reconfigure(settings.runtime_loop)

    def require_node(self) -> str:
        if self.node is None:
            raise NotAReceivingNode(
                "this process is not a DPS node (DPS_NODE is not set): it can send and "
                "group_send, but cannot receive on process channels or join groups")
        return self.node

    def owner_of(self, group: str) -> str:
        return self.ring.owner_of(group)

    # ------------------------------------------------------------------- local channels
    def deliver_local(self, channel: str, expires_at: float, message: dict,
                      wake: Wakeups) -> bool:
        """Queue on a channel of this process; False (and a counter) when it is full."""
        return self.local.deliver(channel, expires_at, message, wake, self.capacity_for(channel))

    # -------------------------------------------------------------------------- sending
    async def send_remote(self, node: str, channel: str, expires_at: float, data: bytes) -> None:
        if not self.cluster.has_node(node):
            self.counters["dropped_unknown_node"] += 1
            return
        await self._outbox(node).send(wire.encode([wire.CHANNEL, channel, expires_at, data]))

    async def send_plain(self, channel: str, expires_at: float, data: bytes,
                         capacity: int) -> bool:
        ttl_ms = int(max(expires_at - time.time(), 0.001) * 1000)
        return await self.transport.channel_push(
            self.ring.owner_of(channel), channel, wire.encode([expires_at, data]), capacity,
            ttl_ms)

    async def receive_plain(self, channel: str) -> dict:
        while True:
            while (popped := self._take_plain(channel)) is not None:
                expires_at, data = wire.decode_plain(popped)
                if expires_at >= time.time():
                    return wire.decode_message(data)
                self.counters["expired"] += 1
            # Shielded: if this receive() is cancelled, a message already popped from Redis
            # lands in the buffer for the next receive() instead of being lost.
            await asyncio.shield(self.call(self._pop_plain(channel)))

    async def _pop_plain(self, channel: str) -> None:
        data = await self.transport.channel_pop(self.ring.owner_of(channel), channel, 1.0)
        if data is not None:
            with self._plain_lock:
                self._plain_buffers.setdefault(channel, deque()).append(data)

    def _take_plain(self, channel: str) -> bytes | None:
        """The oldest message popped for ``channel`` and not yet returned. A buffer goes
        when it empties, so channels nobody reads any more hold nothing (issue 9); the lock,
        because pops run on the runtime's loop and receive() may be on another thread."""
        with self._plain_lock:
            buffer = self._plain_buffers.get(channel)
            if not buffer:
                return None
            popped = buffer.popleft()
            if not buffer:
                del self._plain_buffers[channel]
            return popped

    async def group_send(self, group: str, expires_at: float, data: bytes) -> None:
        owner = self.ring.owner_of(group)
        outbox = self._owner_outbox(owner)
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

    def _resend(self, publishes: list[Unacked]) -> None:
        """Send again, to each group's owner now, publishes a server did not acknowledge
        (it restarted or left the ring), under new numbers and their first identity."""
        for entry in publishes:
            owner = self.ring.owner_of(entry.group)
            seq, identity = self.publish_log.record(owner, entry.group, entry.expires_at,
                                                    entry.data, entry.identity)
            self._outbox(owner).put(wire.encode([wire.PUBLISH, entry.group, entry.expires_at,
                                                 entry.data, self.origin, seq, identity]))
        self.counters["publishes_resent"] += len(publishes)

    # ------------------------------------------------------------------------ membership
    async def group_add(self, group: str, channel: str) -> None:
        await self.membership.add(group, channel, self.settings.confirm_timeout)

    async def group_join(self, group: str, channel: str, options: dict) -> dict:
        response = await self.membership.add(group, channel, self.settings.confirm_timeout,
                                             options)
        return response or {}

    async def query_owner(self, what: str, group: str, argument: object = None) -> object:
        """Ask ``group``'s owner about its presence or history (``topics.api``)."""
        return await self.request(self.owner_of(group), lambda reply: [
            wire.QUERY, what, group, argument, reply])

    async def group_discard(self, group: str, channel: str) -> None:
        await self.membership.discard(group, channel)

    async def change_remote_membership(self, op: str, group: str, channel: str,
                                       node: str) -> None:
        """``group_add``/``group_discard`` of a channel that lives on another node: that node
        holds its memberships, so it applies the change and confirms it."""
        if not self.cluster.has_node(node):
            self.counters["membership_for_unknown_node"] += 1
            return  # no such node, so no such channel either
        if not await self.transport.listening(node):
            if op == "discard":
                return  # a node that is not running holds no members (it restarts clean)
            raise TransportError(f"node {node}, where {channel!r} lives, is not running")
        answer = await self.request(node, lambda reply: [wire.MEMBERSHIP, op, group, channel,
                                                         reply], timeout_factor=2)
        if answer is not None:
            raise TransportError(f"node {node} could not {op} {channel!r}: {answer}")

    async def plain_membership(self, group: str, channel: str, joined: bool) -> None:
        """A plain channel's membership is held by the group's owner, which delivers to it:
        one place, so any process can change it and it is delivered at most once. The
        owner reads its inbox in order, so a group_send after this returns sees it."""
        envelope = [wire.PLAIN_MEMBER, group, channel, time.time() if joined else 0,
                    self.capacity_for(channel)]
        await self._outbox(self.owner_of(group)).put(wire.encode(envelope), ack=True)

    async def request(self, node: str, build: Callable[[str], list],
                      timeout_factor: float = 1) -> object:
        """Send ``node`` the envelope ``build(reply)`` and wait for its answer, which the node
        pushes onto the list ``reply`` in its own Redis (so that processes without an inbox,
        a shell or a Celery worker, can ask too). Raises TransportError on timeout."""
        reply = f"{self.settings.prefix}-reply.{uuid.uuid4().hex}"
        await self._outbox(node).put(wire.encode(build(reply)), ack=True)
        timeout = self.settings.confirm_timeout * timeout_factor
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            data = await self.transport.channel_pop(node, reply, min(left, 1.0))
            if data is not None:
                return wire.decode_message(data)
        raise TransportError(f"node {node} did not answer within {timeout:g}s")

    async def answer(self, reply: str, answer: object) -> None:
        try:
            await self.transport.channel_push(
                self.node, reply, wire.encode_message(answer, self.settings.max_message_bytes),
                1, int(self.settings.confirm_timeout * 2000))
        except TransportError as exc:  # the asker times out and says so
            logger.warning("could not answer a request: %s", exc)

    def _owner_outbox(self, ts: str) -> Outbox:
        """The outbox to a topic server, led by a snapshot of this node's members there if a
        write to it failed since the last one: the owner may have dropped this node meanwhile
        (a partition longer than node_timeout), and a publish or join must not reach it first."""
        outbox = self._outbox(ts)
        if self.node is not None and outbox.failed != self._failures_synced.get(ts, 0):
            self._send_sync(ts)
        return outbox

    def _send_sync(self, ts: str, resend: bool = False) -> None:
        """This node's memberships at ``ts``, its ring and the number of its next publish
        there; with ``resend``, followed by every publish ``ts`` did not acknowledge."""
        outbox = self._outbox(ts)
        log = self.publish_log
        unacked = log.take(ts) if resend and log is not None else []
        # With a resend, the server skips this node's publishes numbered below it: earlier
        # copies, all of them re-sent behind the snapshot. Without one, 0: nothing to skip
        # (a server may still hold publishes sent before the snapshot, and apply them after).
        outbox.put(self.membership.sync_envelope(ts, self.ring_id,
                                                 log.next_seq(ts) if unacked else 0,
                                                 self._previous_ring_id))
        self._failures_synced[ts] = outbox.failed
        if unacked:
            self._resend(unacked)

    # -------------------------------------------------------------------------- flush
    async def flush(self) -> None:
        """Empty the whole layer, on every node, as channels_redis' flush does: every Redis
        key of the cluster's prefix, then each running node's groups and queued messages.
        Returns once every running node has confirmed."""
        await self.transport.flush()
        self.flush_local()
        if self.cluster.embedded:
            return  # one process: every node of it was flushed just now
        others = [n.name for n in self.cluster.nodes if n.name != self.node]
        listening = [n for n in others if await self.transport.listening(n)]
        await asyncio.gather(*(self.request(n, lambda reply: [wire.FLUSH, reply])
                               for n in listening))

    def flush_local(self) -> None:
        self.membership.clear()
        self.local.clear_queues()
        with self._plain_lock:
            self._plain_buffers.clear()
        if self.topic_server is not None:
            self.topic_server.flush_state()

    # --------------------------------------------------------------------------- inbox
    async def _read_inbox(self) -> None:
        node = self.node
        settings = self.settings
        stop = self._stop
        handlers = {
            wire.GROUP_DELIVER: self._deliver_group,
            wire.CHANNEL: self._deliver_channel,
            wire.RESYNC: self._answer_resync,
            wire.ACK: self._acknowledged,
            wire.JOINED: self._joined,
            wire.MEMBERSHIP: self._membership_request,
            wire.FLUSH: self._flush_request,
            wire.WAKE: wire.ignore,
        }
        reader = asyncio.current_task()
        while not stop.is_set():
            if reader.cancelling():
                # A cancel that a library swallowed (Python 3.11's wait_for can, when it races
                # a completing connect): honour it, or a closing loop waits for us forever.
                raise asyncio.CancelledError
            try:
                entries = await self.transport.read(node, settings.read_batch,
                                                    settings.read_block_ms)
            except TransportError as exc:
                if stop.is_set() or asyncio.current_task().cancelling():
                    return  # a read cut short by the shutdown, not a failing Redis
                self.counters["inbox_read_errors"] += 1
                logger.warning("cannot read inbox of %s: %s", node, exc)
                await asyncio.sleep(settings.read_retry_interval)
                continue
            if not entries:
                continue
            wake = Wakeups(self.counters)
            now = time.time()
            for _, data in entries:
                wire.dispatch(data, handlers, self.counters, now, wake)
            wake.fire()

    def _deliver_channel(self, envelope: list, now: float, wake: Wakeups) -> None:
        _, channel, expires_at, message = envelope
        if expires_at < now:
            self.counters["expired"] += 1
        else:
            self.deliver_local(channel, expires_at, wire.decode_message(message), wake)

    def _answer_resync(self, envelope: list, now: float, wake: Wakeups) -> None:
        """A topic server asks for a snapshot. A new boot of it (a restart, or a rejoin
        after a pause that cost it its lease) lost whatever it had not acknowledged: resend."""
        _, ts, ts_boot = envelope
        known, self._ts_boots[ts] = self._ts_boots.get(ts), ts_boot
        log = self.publish_log
        self._send_sync(ts, resend=known != ts_boot and log is not None
                        and log.pending(ts) > 0)

    def _acknowledged(self, envelope: list, now: float, wake: Wakeups) -> None:
        _, ts, ts_boot, origin, through = envelope
        self._ts_boots.setdefault(ts, ts_boot)
        if origin == self.origin and self.publish_log is not None:
            self.publish_log.acknowledged(ts, int(through))

    def _joined(self, envelope: list, now: float, wake: Wakeups) -> None:
        states = envelope[2] if len(envelope) > 2 else {}
        for answer in envelope[1]:
            if isinstance(answer, list):  # [token, response]: a join with options
                token, response = answer
                if "presence" in response:
                    response["presence"] = states[response["presence"]]
                self.membership.joined(token, response)
            else:
                self.membership.joined(answer)

    def _membership_request(self, envelope: list, now: float, wake: Wakeups) -> None:
        _, op, group, channel, reply = envelope
        change = self.membership.add(group, channel, self.settings.confirm_timeout) \
            if op == "add" else self.membership.discard(group, channel)
        self._spawn(self._apply_and_answer(change, reply))

    async def _apply_and_answer(self, change: Awaitable[None], reply: str) -> None:
        try:
            await change
            answer = None
        except TransportError as exc:
            answer = str(exc)
        await self.answer(reply, answer)

    def _flush_request(self, envelope: list, now: float, wake: Wakeups) -> None:
        self.flush_local()
        self._spawn(self.answer(envelope[1], None))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _deliver_group(self, envelope: list, now: float, wake: Wakeups) -> None:
        _, group, expires_at, data, *extra = envelope
        if len(extra) > 1 and extra[1] is not None and not self.deliveries.first_time(extra[1]):
            return  # a publish re-sent after its first owner died, which had fanned it out
        members = self.membership.members(group)
        if not members:
            self.counters["group_deliveries_without_members"] += 1
            return
        if expires_at < now:
            self.counters["expired"] += 1
            return
        # Decoded once for the node and shared by every local member (consumers must treat
        # a received message as read-only, as with any Channels layer that avoids copies).
        message = wire.decode_message(data)
        if extra and extra[0] is not None:  # a group with history: [offset, epoch]
            message[POSITION_KEY] = extra[0]
        fastlanes = self.local.fastlanes
        for channel in members:  # all of them this node's own channels (see membership)
            lane = fastlanes.get(channel)
            if lane is not None:
                wake.call(lane, message)
            else:
                self.deliver_local(channel, expires_at, message, wake)
        self.counters["group_deliveries"] += 1

    # ----------------------------------------------------------------------- heartbeat
    async def _heartbeat(self) -> None:
        while True:
            # Read each time: a newer layer instance may have changed it (reconfigure).
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self._follow_ring()
                if self.node is not None:
                    self._beat(time.time())
            except Exception:  # never let housekeeping die
                logger.exception("heartbeat failed")

    def _beat(self, now: float) -> None:
        for ts in self.ring.nodes:
            outbox = self._outbox(ts)
            if outbox.failed != self._failures_synced.get(ts, 0):
                self._send_sync(ts)  # some update may have been lost: send the truth
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

    async def _follow_ring(self, announce: bool = True) -> None:
        """Follow the ring: the cluster file's topic servers, less those that are down
        (``channel_layer.liveness``). On a change every server of the new ring gets this
        node's snapshot and ring (a gaining server holds publishes until every WS node has
        sent one, see ``TopicServer``), pending joins go to their new owners, and what a
        server that went down did not acknowledge is re-sent to the new owners."""
        try:
            cluster = self._watcher.poll() or self.cluster
        except ClusterConfigError as exc:
            logger.error("ignoring the changed cluster file: %s", exc)
            cluster = self.cluster
        if cluster.embedded:
            return  # its one topic server lives in this process
        self.transport.use_cluster(cluster)  # (it still reaches nodes that were removed)
        configured = [n.name for n in cluster.ts_nodes]
        leases = await self.transport.read_leases(configured)
        # The new cluster and its ring from the same moment: no publish routes by one and
        # sends by the other.
        self.cluster = cluster
        down = down_servers(configured, leases, self._down, self._seen_leased)
        unstarted = not_started(configured, leases, self._seen_leased)
        went_down = down - self._down - unstarted
        if unstarted - self._down:
            logger.info("topic server(s) %s listed but not started (no lease yet): kept "
                        "out of the ring until they take one", sorted(unstarted - self._down))
        self._down = down
        self._seen_leased = with_leases_seen(self._seen_leased, leases)
        ring = live_ring(configured, down, self.ring)
        if ring == self.ring:
            return
        old_ring, self.ring, self.ring_id = self.ring, ring, ring_id(ring)
        if announce:
            self._previous_ring_id = ring_id(old_ring)
        if went_down:
            logger.warning("topic server(s) %s down (lease lapsed); ring is now %s",
                           sorted(went_down), list(ring.nodes))
            self.counters["failovers"] += len(went_down)
        else:
            logger.info("ring changed to %s", list(ring.nodes))
        if not announce or self.node is None:
            return
        self.membership.reroute_pending(old_ring, ring)
        for ts in ring.nodes:
            self._send_sync(ts)
        log = self.publish_log
        for ts in sorted(set(old_ring.nodes) - set(ring.nodes)):
            if ts in down:  # (a server removed from the file drains and acknowledges)
                self._resend(log.take(ts))

    def _expire_memberships(self, now: float) -> None:
        for group, channel in self.membership.expired(now, self.settings.group_expiry):
            self.counters["memberships_expired"] += 1
            self._spawn(self.membership.discard(group, channel))


# One runtime per node per process, shared by every layer instance of that node (Django makes
# a layer per alias, and again after override_settings). Counted, so the last close stops it.
_runtimes: dict[tuple, list] = {}  # key -> [runtime, open layer instances]
_runtimes_lock = threading.Lock()
# WS nodes whose backlog this process has skipped (once per process: a runtime that boots
# again on another loop keeps what was queued for it meanwhile).
_started_clean: set[tuple] = set()


def _runtime_key(cluster: Cluster, node: str | None, settings: LayerSettings) -> tuple:
    return cluster.embedded, cluster.nodes, node, settings.prefix


def acquire_runtime(cluster: Cluster, node: str | None, settings: LayerSettings,
                    capacity_for: Callable[[str], int]) -> NodeRuntime:
    key = _runtime_key(cluster, node, settings)
    with _runtimes_lock:
        entry = _runtimes.get(key)
        if entry is None:
            entry = _runtimes[key] = [NodeRuntime(cluster, node, settings, capacity_for), 0]
            entry[0].registry_key = key
        else:
            entry[0].reconfigure(settings, capacity_for)
        entry[1] += 1
        return entry[0]


async def release_runtime(runtime: NodeRuntime) -> None:
    """One layer instance is done with ``runtime``; the last one closes it."""
    key = runtime.registry_key
    with _runtimes_lock:
        entry = _runtimes.get(key)
        if entry is None or entry[0] is not runtime:
            last = True  # made outside the registry: nobody else holds it
        else:
            entry[1] -= 1
            last = entry[1] <= 0
            if last:
                del _runtimes[key]
    if last:
        await runtime.close()
