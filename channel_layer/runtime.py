"""A node's runtime: the part of a process that talks to Redis.

Django runs consumers on the server's loop, sync code on loops that ``async_to_sync`` creates
and throws away, tests on their own loops. Redis connections and the inbox reader must live on
a loop that lasts as long as the process. Where that loop is (``runtime_loop``):

- ``server``: the ASGI server's own loop (daphne, uvicorn: one loop in the main thread for the
  process's life). Consumers and the runtime share it, so a publish and its deliveries need
  no thread hop (the README's benchmark section has the A/B).
- ``thread``: a private I/O thread with its own loop; layer calls from any loop hop onto it
  (``call``), and deliveries hop back by waking the receiver's loop once per inbox batch.
- ``auto`` (the default): ``server`` when the process is an ASGI server program, else
  ``thread`` (tests, management commands, ``runserver``).

The runtime holds the authoritative list of this node's group members (group -> local
channels). A group's first local member registers this node with the group's owner before
``group_add`` returns; the last one leaving unregisters it; a topic server that asks
(RESYNC) gets a snapshot of every group it owns.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from . import wire
from .cluster import EMBEDDED_TS, Cluster, ClusterConfigError, ClusterFileWatcher
from .local_channels import Fastlane, LocalChannel, Wakeups
from .outbox import Outbox
from .ring import Ring
from .settings import LayerSettings
from .topic_server import TopicServer
from .transport import MemoryTransport, RedisTransport, Transport, TransportError

logger = logging.getLogger("channel_layer.runtime")
T = TypeVar("T")


def node_of_channel(channel: str) -> str | None:
    """``specific.ws-a!x1y2`` -> ``ws-a``; None for a plain channel name."""
    bang = channel.find("!")
    if bang < 0:
        return None
    return channel[channel.rfind(".", 0, bang) + 1: bang]


# Programs whose loop runs in the main thread for the whole life of the process.
ASGI_SERVER_PROGRAMS = frozenset({"daphne", "uvicorn", "hypercorn", "granian"})


def started_as_asgi_server() -> bool:
    """Whether this process is an ASGI server program (``daphne ...``, ``python -m uvicorn``)."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    names = {os.path.basename(sys.argv[0]) if sys.argv else ""}
    if main_spec is not None and main_spec.name:
        names.add(main_spec.name.split(".")[0])
    return not names.isdisjoint(ASGI_SERVER_PROGRAMS)


def _uses_server_loop(setting: str) -> bool:
    return setting == "server" or (setting == "auto" and started_as_asgi_server())


class NotAReceivingNode(RuntimeError):
    """This process has no DPS_NODE, so it can send but hold no channels or groups."""


class NodeRuntime:
    def __init__(self, cluster: Cluster, node: str | None, settings: LayerSettings,
                 capacity_for: Callable[[str], int]) -> None:
        self.cluster = cluster
        self.node = node
        self.settings = settings
        self.capacity_for = capacity_for
        self.ring = Ring(n.name for n in cluster.ts_nodes)
        self.counters: Counter[str] = Counter()
        self.channels: dict[str, LocalChannel] = {}
        self.fastlanes: dict[str, Fastlane] = {}
        self.groups: dict[str, dict[str, float]] = {}  # I/O thread only
        self.boot = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transport: Transport | None = None
        self.topic_server: TopicServer | None = None  # embedded cluster only
        self._channels_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.on_server_loop = _uses_server_loop(settings.runtime_loop)
        self._booting: asyncio.Task | None = None  # the boot, when on the server's loop
        self._outboxes: dict[str, Outbox] = {}
        self._registering: dict[str, asyncio.Future] = {}
        self._dirty_counts: set[str] = set()
        self._failures_synced: dict[str, int] = {}
        self._plain_buffers: dict[str, deque[bytes]] = {}
        self._tasks: list[asyncio.Task] = []
        self._stop: asyncio.Event | None = None
        self._watcher = ClusterFileWatcher(cluster)

    # --------------------------------------------------------------------------- lifecycle
    def ensure_started(self) -> None:
        if self.on_server_loop:
            self._start_on_running_loop()
            return
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is not None:
                return
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(target=self._thread_main, args=(ready, failure),
                                      name=f"dps-runtime-{self.node or 'client'}", daemon=True)
            thread.start()
            ready.wait()
            if failure:
                thread.join()
                raise failure[0]
            self._thread = thread

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            loop.run_until_complete(self._boot())
        except BaseException as exc:
            failure.append(exc)
            loop.run_until_complete(self._close_transport())
            loop.close()
            self.loop = None
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _boot(self) -> None:
        self.boot = os.urandom(6).hex()
        self._stop = asyncio.Event()
        if self.cluster.embedded:
            self.transport = MemoryTransport(self.settings.prefix, self.settings.inbox_cap)
        else:
            self.transport = RedisTransport(self.cluster, self.settings.prefix,
                                            self.settings.inbox_cap, self.settings.connect_timeout)
            if self.node is not None:
                await self.transport.ping(self.node)  # fail at start, not at first message
        logger.info("layer runtime of %s runs on %s", self.node or "a sending process",
                    "the server's loop" if self.on_server_loop else "its own I/O thread")
        loop = asyncio.get_running_loop()
        if self.node is not None:
            self._tasks.append(loop.create_task(self._read_inbox()))
            self._tasks.append(loop.create_task(self._heartbeat()))
        if self.cluster.embedded:
            self.topic_server = TopicServer(self.cluster, EMBEDDED_TS, self.transport,
                                            self.settings)
            self._tasks.append(loop.create_task(self.topic_server.run(self._stop)))

    def _start_on_running_loop(self) -> None:
        if self._booting is not None:
            if not self.loop.is_closed():
                return
            self._forget_loop()  # that loop is gone (a test's, say): start on this one
        if threading.current_thread() is not threading.main_thread():
            # Not the server's loop (a loop async_to_sync made in a worker thread, say): the
            # runtime would die with it. Run this process's runtime on its own thread instead.
            logger.info("the layer started outside the server's loop: using an I/O thread")
            self.on_server_loop = False
            self.ensure_started()
            return
        self.loop = asyncio.get_running_loop()
        self._booting = self.loop.create_task(self._boot_on_server_loop())

    async def _boot_on_server_loop(self) -> None:
        try:
            await self._boot()
        except BaseException:
            await self._close_transport()
            self._forget_loop()  # the next layer call tries again
            raise

    async def _after_boot(self, booting: asyncio.Task, coro: Awaitable[T]) -> T:
        try:
            await asyncio.shield(booting)
        except BaseException:
            coro.close()  # type: ignore[attr-defined]
            raise
        return await coro

    async def call(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the runtime's loop and wait for it from whatever loop is calling."""
        self.ensure_started()
        booting = self._booting
        if booting is not None and not booting.done():  # only the first calls wait for it
            coro = self._after_boot(booting, coro)
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def _forget_loop(self) -> None:
        """Drop what belonged to a loop that is closed: its tasks and connections went with it."""
        self.loop, self._booting, self.transport = None, None, None
        self._tasks.clear()
        self._outboxes.clear()
        self._registering.clear()  # futures of that loop

    async def close(self) -> None:
        if self.on_server_loop:
            if self._booting is None:
                return
            try:
                if not self.loop.is_closed():
                    await self.call(self._shutdown())
            finally:
                self._forget_loop()
            return
        thread, loop = self._thread, self.loop
        if thread is None or loop is None:
            return
        try:
            await self.call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            self._thread = None
            self.loop = None

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
        self.groups.clear()
        self._dirty_counts.clear()
        await self._close_transport()

    async def _close_transport(self) -> None:
        if self.transport is not None:
            await self.transport.close()

    def _outbox(self, node: str) -> Outbox:
        outbox = self._outboxes.get(node)
        if outbox is None:
            outbox = self._outboxes[node] = Outbox(self.transport, node)
        return outbox

    def require_node(self) -> str:
        if self.node is None:
            raise NotAReceivingNode(
                "this process is not a DPS node (DPS_NODE is not set): it can send and "
                "group_send, but cannot receive on process channels or join groups")
        return self.node

    # ------------------------------------------------------------------- local channels
    def local_channel(self, channel: str) -> LocalChannel:
        local = self.channels.get(channel)
        if local is None:
            with self._channels_lock:
                local = self.channels.get(channel)
                if local is None:
                    local = self.channels[channel] = LocalChannel(self.capacity_for(channel))
        return local

    def deliver_local(self, channel: str, expires_at: float, message: dict,
                      wake: Wakeups) -> bool:
        """Queue on a channel of this process; False (and a counter) when it is full."""
        local = self.channels.get(channel) or self.local_channel(channel)
        if len(local.queue) >= local.capacity:
            self.counters["dropped_channel_full"] += 1
            return False
        local.queue.append((expires_at, message))
        waiter = local.waiter
        if waiter is not None:
            wake.add(waiter)
        return True

    async def receive_local(self, channel: str) -> dict:
        loop = asyncio.get_running_loop()
        while True:
            local = self.local_channel(channel)
            local.last_used = time.monotonic()
            message, expired = local.take(time.time())
            if expired:
                self.counters["expired"] += expired
            if message is not None:
                return message
            waiter = loop.create_future()
            with self._channels_lock:
                if self.channels.get(channel) is not local:
                    continue  # swept between lookup and wait: use the new one
                if local.waiter is not None and not local.waiter.done():
                    raise RuntimeError(f"two concurrent receive() calls on channel {channel!r}")
                local.waiter = waiter
            try:
                if not local.queue:  # re-check: a message may have landed before we registered
                    await waiter
            finally:
                if local.waiter is waiter:
                    local.waiter = None

    # -------------------------------------------------------------------------- sending
    async def send_remote(self, node: str, channel: str, expires_at: float, data: bytes) -> None:
        if not self.cluster.has_node(node):
            self.counters["dropped_unknown_node"] += 1
            return
        await self._outbox(node).put(wire.encode([wire.CHANNEL, channel, expires_at, data]),
                                     ack=True)

    async def send_plain(self, channel: str, expires_at: float, data: bytes,
                         capacity: int) -> bool:
        ttl_ms = int(max(expires_at - time.time(), 0.001) * 1000)
        return await self.transport.channel_push(
            self.ring.owner_of(channel), channel, wire.encode([expires_at, data]), capacity,
            ttl_ms)

    async def receive_plain(self, channel: str) -> dict:
        buffer = self._plain_buffers.setdefault(channel, deque())
        while True:
            while buffer:
                expires_at, data = wire.decode_plain(buffer.popleft())
                if expires_at >= time.time():
                    return wire.decode_message(data)
                self.counters["expired"] += 1
            # Shielded: if this receive() is cancelled, a message already popped from Redis
            # lands in the buffer for the next receive() instead of being lost.
            await asyncio.shield(self.call(self._pop_plain(channel, buffer)))

    async def _pop_plain(self, channel: str, buffer: deque[bytes]) -> None:
        data = await self.transport.channel_pop(self.ring.owner_of(channel), channel, 1.0)
        if data is not None:
            buffer.append(data)

    async def group_send(self, group: str, expires_at: float, data: bytes) -> None:
        owner = self.ring.owner_of(group)
        await self._outbox(owner).put(wire.encode([wire.PUBLISH, group, expires_at, data]),
                                      ack=True)

    # ------------------------------------------------------------------------ membership
    def _member_envelope(self, group: str, count: int) -> bytes:
        return wire.encode([wire.MEMBER, group, self.node, self.boot, count])

    async def group_add(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is None:
            members = self.groups[group] = {}
        first = not members
        members[channel] = time.time()
        if first:
            # Register before returning, so a group_send that starts after group_add
            # returned reaches this member. Later joiners wait for the same registration.
            done = self._outbox(self.ring.owner_of(group)).put(
                self._member_envelope(group, 1), ack=True)
            self._registering[group] = done
            try:
                await done
            except BaseException:
                self._forget_member(group, channel)
                raise
            finally:
                if self._registering.get(group) is done:
                    del self._registering[group]
        else:
            pending = self._registering.get(group)
            if pending is not None:
                await asyncio.shield(pending)
            self._dirty_counts.add(group)

    def _forget_member(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self.groups[group]

    async def group_discard(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if not members or channel not in members:
            return
        del members[channel]  # local removal is immediate: nothing more is delivered here
        if members:
            self._dirty_counts.add(group)
            return
        del self.groups[group]
        try:
            await self._outbox(self.ring.owner_of(group)).put(
                self._member_envelope(group, 0), ack=True)
        except TransportError as exc:
            # The owner will be re-synced once its Redis answers again (see _heartbeat).
            logger.warning("could not unregister %s from its owner: %s", group, exc)

    def snapshot_for(self, ts: str) -> dict[str, int]:
        owner_of = self.ring.owner_of
        return {g: len(m) for g, m in self.groups.items() if owner_of(g) == ts}

    def _send_sync(self, ts: str) -> None:
        outbox = self._outbox(ts)
        outbox.put(wire.encode([wire.SYNC, self.node, self.boot, ts, self.snapshot_for(ts)]))
        self._failures_synced[ts] = outbox.failed

    # --------------------------------------------------------------------------- inbox
    async def _read_inbox(self) -> None:
        node = self.node
        settings = self.settings
        stop = self._stop
        handlers = {
            wire.GROUP_DELIVER: self._deliver_group,
            wire.CHANNEL: self._deliver_channel,
            wire.RESYNC: self._answer_resync,
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
            wake = Wakeups()
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
        self._send_sync(envelope[1])

    def _deliver_group(self, envelope: list, now: float, wake: Wakeups) -> None:
        _, group, expires_at, data = envelope
        members = self.groups.get(group)
        if not members:
            self.counters["group_deliveries_without_members"] += 1
            return
        if expires_at < now:
            self.counters["expired"] += 1
            return
        # Decoded once for the node and shared by every local member (consumers must treat
        # a received message as read-only, as with any Channels layer that avoids copies).
        message = wire.decode_message(data)
        local_node = self.node
        fastlanes = self.fastlanes
        for channel in members:
            lane = fastlanes.get(channel)
            if lane is not None:
                wake.call(lane, message)
            elif node_of_channel(channel) == local_node:
                self.deliver_local(channel, expires_at, message, wake)
            else:
                self._forward(channel, expires_at, data)
        self.counters["group_deliveries"] += 1

    def _forward(self, channel: str, expires_at: float, data: bytes) -> None:
        """A member that lives elsewhere (a plain channel, or another node's channel)."""
        node = node_of_channel(channel)
        if node is None:
            asyncio.get_running_loop().create_task(
                self.send_plain(channel, expires_at, data, self.capacity_for(channel)))
        elif self.cluster.has_node(node):
            self._outbox(node).put(wire.encode([wire.CHANNEL, channel, expires_at, data]))
        else:
            self.counters["dropped_unknown_node"] += 1

    # ----------------------------------------------------------------------- heartbeat
    async def _heartbeat(self) -> None:
        settings = self.settings
        while True:
            await asyncio.sleep(settings.heartbeat_interval)
            try:
                self._beat(time.time())
            except Exception:  # never let housekeeping die
                logger.exception("heartbeat failed")

    def _beat(self, now: float) -> None:
        self._follow_cluster_file()
        for ts in self.ring.nodes:
            outbox = self._outbox(ts)
            if outbox.failed != self._failures_synced.get(ts, 0):
                self._send_sync(ts)  # some update may have been lost: send the truth
            else:
                outbox.put(wire.encode([wire.HELLO, self.node, self.boot]))
        self._flush_counts()
        self._expire_memberships(now)
        self._sweep_channels(now)

    def _follow_cluster_file(self) -> None:
        """Swap in a new ring when the cluster file changes, and move memberships with it:
        groups whose owner changed are unregistered at the old owner and the new owners get
        a full snapshot before anything else this node sends them."""
        try:
            cluster = self._watcher.poll()
        except ClusterConfigError as exc:
            logger.error("ignoring the changed cluster file: %s", exc)
            return
        if cluster is None:
            return
        old_ring, new_ring = self.ring, Ring(n.name for n in cluster.ts_nodes)
        self.cluster = cluster
        self.transport.use_cluster(cluster)
        if new_ring == old_ring:
            return
        self.ring = new_ring
        gaining: set[str] = set()
        for group in self.groups:
            before, after = old_ring.owner_of(group), new_ring.owner_of(group)
            if before != after:
                gaining.add(after)
                if cluster.has_node(before):
                    self._outbox(before).put(self._member_envelope(group, 0))
        for ts in gaining:
            self._send_sync(ts)
        logger.info("ring changed to %s; moved memberships to %s", list(new_ring.nodes),
                    sorted(gaining))

    def _flush_counts(self) -> None:
        dirty, self._dirty_counts = self._dirty_counts, set()
        for group in dirty:
            members = self.groups.get(group)
            if members:
                self._outbox(self.ring.owner_of(group)).put(
                    self._member_envelope(group, len(members)))

    def _expire_memberships(self, now: float) -> None:
        horizon = now - self.settings.group_expiry
        for group, members in list(self.groups.items()):
            for channel in [c for c, joined in members.items() if joined < horizon]:
                self.counters["memberships_expired"] += 1
                asyncio.get_running_loop().create_task(self.group_discard(group, channel))

    def _sweep_channels(self, now: float) -> None:
        """Drop expired messages nobody is waiting for, and forget idle empty channels."""
        idle_before = time.monotonic() - max(self.settings.expiry, 1.0) * 2
        for name, local in list(self.channels.items()):
            if local.waiter is not None:
                continue
            while local.queue and local.queue[0][0] < now:
                local.queue.popleft()
                self.counters["expired"] += 1
            if not local.queue and local.last_used < idle_before:
                with self._channels_lock:
                    if local.waiter is None and not local.queue:
                        self.channels.pop(name, None)
