"""A node's runtime: the part of a process that talks to Redis.

It lives on one event loop for the process's life (``loop_home``: the server's loop under
daphne and uvicorn, else its own I/O thread), and every layer call runs there (``call``).
The runtime is the layer's one door to the cluster, and composes:

- the node's local channels (``local_channels``) and its membership (``membership``);
- its links to the topic servers (``owner_links``: snapshots, numbered publishes, the heartbeat
  and the ring it follows), and its outboxes (``peers``);
- its inbox reader and handlers (``node_inbox``);
- plain channels (``plain_channels``).

One process holds one runtime per node: every ``DPSChannelLayer`` instance of that node in the
process shares it (``acquire_runtime``), because a topic server knows a node by its name and
boot, and two runtimes of one name would look like a node restarting over and over.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from channel_layer import wire
from channel_layer.cluster import EMBEDDED_TS, WS, Cluster
from channel_layer.local_channels import LocalChannels, Wakeups
from channel_layer.loop_home import LoopHome
from channel_layer.membership import Membership
from channel_layer.memory_transport import MemoryTransport
from channel_layer.node_inbox import POSITION_KEY, NodeInbox
from channel_layer.owner_links import OwnerLinks
from channel_layer.peers import Peers
from channel_layer.plain_channels import PlainChannels
from channel_layer.ring_follower import RingFollower
from channel_layer.sequencing import DeliveryFilter, PublishLog, origin_of
from channel_layer.settings import LayerSettings
from channel_layer.topic_server import TopicServer
from channel_layer.transport import RedisTransport, Transport, TransportError

logger = logging.getLogger("channel_layer.runtime")
T = TypeVar("T")
__all__ = ["POSITION_KEY", "NodeRuntime", "NotAReceivingNode", "acquire_runtime",
           "node_of_channel", "release_runtime"]


def node_of_channel(channel: str) -> str | None:
    """``specific.ws-a!x1y2`` -> ``ws-a``; None for a plain channel name."""
    bang = channel.find("!")
    if bang < 0:
        return None
    return channel[channel.rfind(".", 0, bang) + 1: bang]


class NotAReceivingNode(RuntimeError):
    """This process has no DPS_NODE, so it can send but hold no channels or groups."""


class NodeRuntime:
    """One process's side of the cluster: its inbox, its links to owners and peers, its
    memberships and the ring it follows, and their start and stop. About 25 methods: each unit
    (``NodeInbox``, ``OwnerLinks``, ``Peers``, ``RingFollower``, ``PlainChannels``) is its own
    class; what is left here is the layer's calls into them and the lifecycle."""

    def __init__(self, cluster: Cluster, node: str | None, settings: LayerSettings,
                 capacity_for: Callable[[str], int]) -> None:
        self.node = node
        self.settings = settings
        self.capacity_for = capacity_for
        self.follower = RingFollower(cluster)  # the ring without the servers that are out
        self.counters: Counter[str] = Counter()
        self.origin = ""  # this node's name and boot: what its publishes are numbered under
        self.deliveries = DeliveryFilter(self.counters, settings.dedup_window)
        self.local = LocalChannels(self.counters)
        # Runtime loop only (the layer calls it through ``call``).
        self.membership = Membership(node, self.counters, self.owner_of,
                                     lambda ts: self.links.owner_outbox(ts))
        self.links = OwnerLinks(node, settings, self.counters, self.follower, self.membership,
                                self.local)
        self.plain = PlainChannels(self.counters, self.owner_of, lambda: self.transport,
                                   self.call)
        self.boot = ""
        self.home = LoopHome(node or "client", settings.runtime_loop, self._boot,
                             self._close_transport, self._forget_loop)
        # Of the current boot (on the runtime's loop):
        self.transport: Transport | None = None
        self.peers: Peers | None = None
        self.inbox: NodeInbox | None = None
        self.topic_server: TopicServer | None = None  # embedded cluster only
        self._tasks: list[asyncio.Task] = []
        self._stop: asyncio.Event | None = None
        self.registry_key: tuple | None = None  # see acquire_runtime

    @property
    def cluster(self) -> Cluster:
        return self.follower.cluster

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
        publish_log = None
        if self.node is not None:
            self.origin = origin_of(self.node, self.boot)
            publish_log = PublishLog(self.origin, self.settings.unacked_limit, self.counters,
                                     self.settings.unacked_bytes_limit)
        self._stop = asyncio.Event()
        if self.cluster.embedded:
            self.transport = MemoryTransport(self.settings.prefix, self.settings.inbox_cap)
        else:
            self.transport = RedisTransport(self.cluster, self.settings.prefix,
                                            self.settings.inbox_cap, self.settings.connect_timeout)
        self.peers = Peers(self.transport, self.node, self.settings)
        self.links.start(self.transport, self.peers, publish_log, self.boot, self.origin)
        if not self.cluster.embedded:
            if self.node is not None:
                await self.transport.ping(self.node)  # fail at start, not at first message
            await self.links.follow_ring(announce=False)  # route around servers already out
            if self.node is not None:
                await self._start_clean()
        logger.info("layer runtime of %s runs on %s", self.node or "a sending process",
                    "the server's loop" if self.home.on_server_loop else "its own I/O thread")
        loop = asyncio.get_running_loop()
        if self.node is not None:
            self.inbox = NodeInbox(self.node, self.settings, self.counters, self.transport,
                                   self.membership, self.local, self.deliveries, self.links,
                                   self.peers, self.deliver_local, self.flush_local)
            self._tasks.append(loop.create_task(self.inbox.read(self._stop)))
        if self.node is not None or not self.cluster.embedded:
            # (a process without a node follows the ring too: a Celery worker lives long)
            self._tasks.append(loop.create_task(self.links.heartbeat()))
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
            self.links.sync_all()

    def _forget_loop(self) -> None:
        """Drop what belonged to a loop that is closed: its tasks and connections went with it."""
        self.transport = None
        self._tasks.clear()
        if self.peers is not None:
            self.peers.clear()
        self.membership.forget_loop()  # futures of that loop

    async def close(self) -> None:
        await self.home.close(self._shutdown)

    async def _shutdown(self) -> None:
        if self.node is not None:
            self.links.say_goodbye()
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
        await self.peers.drain()
        self.peers.clear()
        self.membership.clear()
        await self._close_transport()

    async def _close_transport(self) -> None:
        if self.transport is not None:
            await self.transport.close()

    def reconfigure(self, settings: LayerSettings, capacity_for: Callable[[str], int]) -> None:
        """A newer layer instance of this node: its settings apply from now on (where the
        runtime loop runs is fixed once started)."""
        if settings != self.settings:
            logger.info("layer settings of %s changed by a new layer instance",
                        self.node or "this process")
        self.settings = settings
        for unit in (self.links, self.peers, self.inbox):
            if unit is not None:
                unit.settings = settings
        self.capacity_for = capacity_for
        self.home.reconfigure(settings.runtime_loop)

    def require_node(self) -> str:
        if self.node is None:
            raise NotAReceivingNode(
                "this process is not a DPS node (DPS_NODE is not set): it can send and "
                "group_send, but cannot receive on process channels or join groups")
        return self.node

    def owner_of(self, group: str) -> str:
        return self.follower.owner_of(group)

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
        await self.peers.outbox(node).send(wire.encode([wire.CHANNEL, channel, expires_at,
                                                        data]))

    async def group_send(self, group: str, expires_at: float, data: bytes) -> None:
        await self.links.publish(group, expires_at, data)

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
        await self.peers.outbox(self.owner_of(group)).put(wire.encode(envelope), ack=True)

    async def request(self, node: str, build: Callable[[str], list],
                      timeout_factor: float = 1) -> object:
        """Send ``node`` the envelope ``build(reply)`` and wait for its answer, which the node
        pushes onto the list ``reply`` in its own Redis (so that processes without an inbox,
        a shell or a Celery worker, can ask too). Raises TransportError on timeout."""
        reply = f"{self.settings.prefix}-reply.{uuid.uuid4().hex}"
        await self.peers.outbox(node).put(wire.encode(build(reply)), ack=True)
        timeout = self.settings.confirm_timeout * timeout_factor
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            data = await self.transport.channel_pop(node, reply, min(left, 1.0))
            if data is not None:
                return wire.decode_message(data)
        raise TransportError(f"node {node} did not answer within {timeout:g}s")

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
        self.plain.clear()
        if self.topic_server is not None:
            self.topic_server.flush_state()


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
