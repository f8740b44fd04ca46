"""Node transport: every node's inbox lives on that node's own Redis.

A sender writes straight into the receiver's Redis (no central broker); a node reads only its
own inbox. Delivery is pushed: the receiver holds a subscription to its inbox channel
(``subscriber``) and a sender PUBLISHes to it, so an envelope costs exactly one Redis command
and reading costs none.

When PUBLISH reaches no subscriber (the node is down, restarting, or Redis dropped a subscriber
that stopped reading once it passed ``client-output-buffer-limit pubsub``), the envelope goes
to the node's *backlog*, a stream capped at ``inbox_cap`` (``XADD ... MAXLEN``). From then on
that sender queues through a script that publishes only while the backlog is empty, so its
envelopes keep their order; the first one that goes out live puts it back on plain PUBLISH. A
receiver subscribes first and then drains its backlog (trimming what it has handled in the
same round trip as its next read) before it takes live envelopes, so what was queued while it
was away arrives first and in order.

``channel_layer.memory_transport.MemoryTransport`` is the same contract inside one process,
for the embedded cluster.
"""
from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from channel_layer.cluster import Cluster, redact_url
from channel_layer.resp import CommandPipe, RespError
from channel_layer.subscriber import InboxSubscription

logger = logging.getLogger("channel_layer.transport")

Entry = tuple[bytes, bytes]  # (entry id, envelope bytes)

# A plain (not process-specific) channel is a Redis list on its owner's Redis. The script
# makes the capacity check and the push one atomic step, so ChannelFull is exact.
_CHANNEL_PUSH = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


# A sender that has found its receiver absent: publish only while the backlog is empty (the
# receiver drains it before taking live envelopes), otherwise queue behind it. 1 = went live.
_PUBLISH_OR_QUEUE = """
if redis.call('XLEN', KEYS[1]) == 0 and redis.call('PUBLISH', ARGV[1], ARGV[2]) > 0 then
  return 1
end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', 'd', ARGV[2])
return 0
"""
# A topic server's lease (channel_layer.liveness): KEYS[1] holds its boot for ARGV[2] ms,
# KEYS[2] (no expiry) says a lease was ever held on this Redis. Returns what held it before:
# the boot, or "" when it lapsed, or false when this Redis never had one (new, or restarted
# without persistence: a lease lost that way proves nothing).
_RENEW_LEASE = """
local before = redis.call('GET', KEYS[1])
local seen = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], '1')
if before then return before end
if seen then return '' end
return false
"""
# A removed server that drained gives its lease up, unless a newer life holds it already.
_DROP_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
LEASE_UNKNOWN = object()  # read_leases: that node's Redis did not answer
LEASE_NEVER_HELD = object()  # read_leases: its Redis answers and never had a lease of it
LEASE_LAPSED = ""  # renew_lease: the lease had lapsed (others have taken this server out)
LIVE_ENTRY_ID = b""  # envelopes received live have no stream id: nothing to trim for them


class TransportError(ConnectionError):
    """A node's Redis could not be reached; the message names the node, never a password."""


def next_entry_id(entry_id: bytes) -> bytes:
    ms, _, seq = entry_id.partition(b"-")
    return ms + b"-" + str(int(seq) + 1).encode()


def resolve_if_pending(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Transport(ABC):
    """The seam between the layer / topic server and whatever carries their envelopes."""

    def __init__(self, prefix: str, inbox_cap: int) -> None:
        self.prefix = prefix
        self.inbox_cap = inbox_cap
        # "backlogged": envelopes this sender queued for an absent receiver (the backlog keeps
        # the newest inbox_cap of them).
        self.counters: Counter[str] = Counter()

    @abstractmethod
    async def push(self, node: str, envelopes: Sequence[bytes]) -> None:
        """Append envelopes, in order, to ``node``'s inbox (one round trip)."""

    @abstractmethod
    async def read(self, node: str, count: int, block_ms: int) -> list[Entry]:
        """Up to ``count`` entries of ``node``'s inbox, oldest first, blocking up to block_ms.

        Entries returned by the previous call are considered handled and are trimmed.
        """

    async def ack(self, node: str) -> None:
        """Trim what the last ``read`` returned now (a reader that stops cleanly)."""
        return None  # nothing to trim where reads consume entries (MemoryTransport)

    async def stop_reading(self, node: str) -> list[Entry]:
        """Stop receiving for ``node``; return what had already been sent to this reader
        (from now on senders queue for the next one)."""
        return []

    async def discard_backlog(self, node: str) -> int:
        """Skip what ``node``'s backlog holds now (a previous process's envelopes); return
        how many. What is queued from here on is still read, in order."""
        return 0  # nothing outlives a process where inboxes are in memory (MemoryTransport)

    @abstractmethod
    async def listening(self, node: str) -> bool:
        """Whether ``node`` is running (reading its inbox) right now."""

    @abstractmethod
    async def inbox_length(self, node: str) -> int: ...

    @abstractmethod
    async def channel_push(self, node: str, channel: str, data: bytes, capacity: int,
                           ttl_ms: int) -> bool:
        """Queue on a plain channel held by ``node``; False when it is at capacity."""

    @abstractmethod
    async def channel_pop(self, node: str, channel: str, timeout: float) -> bytes | None: ...

    @abstractmethod
    async def put_stats(self, node: str, blob: bytes, ttl_s: int) -> None: ...

    @abstractmethod
    async def get_stats(self, node: str) -> bytes | None: ...

    @abstractmethod
    async def flush(self) -> None:
        """Delete every key this transport's prefix owns, on every node, but the topic
        servers' leases: they say which servers run, which a flush does not change."""

    async def close(self) -> None:
        return None

    def use_cluster(self, cluster: Cluster) -> None:
        """Follow a changed cluster file (new nodes, new addresses)."""
        return None

    def inbox_key(self, node: str) -> str:
        return f"{self.prefix}:inbox:{node}"

    def channel_key(self, channel: str) -> str:
        return f"{self.prefix}:chan:{channel}"

    def stats_key(self, node: str) -> str:
        return f"{self.prefix}:stats:{node}"

    def lease_keys(self, node: str) -> list[str]:
        return [f"{self.prefix}:live:{node}", f"{self.prefix}:leased:{node}"]

    @abstractmethod
    async def renew_lease(self, node: str, boot: str, ttl_ms: int) -> str | None:
        """Hold ``node``'s lease for ``ttl_ms`` as ``boot``; what held it before: a boot,
        ``LEASE_LAPSED``, or None (this Redis never had a lease of ``node``)."""

    @abstractmethod
    async def drop_lease(self, node: str, boot: str) -> None: ...

    @abstractmethod
    async def read_leases(self, nodes: Sequence[str]) -> dict[str, object]:
        """Each node's lease holder: a boot, None (lapsed), ``LEASE_NEVER_HELD`` (its Redis
        answers and never had one: not started, or the Redis lost its keys) or
        ``LEASE_UNKNOWN`` (its Redis did not answer)."""


class RedisTransport(Transport):
    """Inbox channels (with backlog streams), one connection pool per distinct Redis URL.

    Its methods are the :class:`Transport` contract, one per Redis operation a node needs, plus
    the connections they share; about 25 because the contract is that wide."""

    def __init__(self, cluster: Cluster, prefix: str = "dps", inbox_cap: int = 100_000,
                 connect_timeout: float = 2.0) -> None:
        super().__init__(prefix, inbox_cap)
        self.cluster = cluster
        self.connect_timeout = connect_timeout
        self._clients: dict[str, aioredis.Redis] = {}
        self._readers: dict[str, aioredis.Redis] = {}
        self._read_cursor: dict[str, bytes] = {}
        self._acked: dict[str, bytes] = {}
        self._subscriptions: dict[str, InboxSubscription] = {}
        self._pipes: dict[str, CommandPipe] = {}  # the PUBLISH path, one per Redis URL
        self._draining: set[str] = set()  # receivers still taking their backlog
        self._queueing: set[str] = set()  # destinations this sender found absent

    def use_cluster(self, cluster: Cluster) -> None:
        # Nodes removed from the file stay reachable: writes already queued for them (a
        # removed topic server drains), and their answers, still need their address.
        kept = tuple(n for n in self.cluster.nodes if not cluster.has_node(n.name))
        self.cluster = replace(cluster, nodes=cluster.nodes + kept) if kept else cluster

    def _client(self, node: str) -> aioredis.Redis:
        url = self.cluster.node(node).redis_url
        client = self._clients.get(url)
        if client is None:
            client = aioredis.Redis.from_url(url, socket_connect_timeout=self.connect_timeout)
            self._clients[url] = client
        return client

    def _reader(self, node: str) -> aioredis.Redis:
        # Backlog reads and trims: one connection per receiving node, apart from the senders'.
        client = self._readers.get(node)
        if client is None:
            url = self.cluster.node(node).redis_url
            client = aioredis.Redis.from_url(url, socket_connect_timeout=self.connect_timeout,
                                             single_connection_client=True)
            self._readers[node] = client
        return client

    def _fail(self, node: str, exc: Exception) -> TransportError:
        url = self.cluster.node(node).redis_url or ""
        return TransportError(f"Redis of node {node} at {redact_url(url)} failed: {exc}")

    def _pipe(self, node: str) -> CommandPipe:
        url = self.cluster.node(node).redis_url
        pipe = self._pipes.get(url)
        if pipe is None:
            pipe = self._pipes[url] = CommandPipe(url, self.connect_timeout)
        return pipe

    async def push(self, node: str, envelopes: Sequence[bytes]) -> None:
        channel = key = self.inbox_key(node)
        try:
            if node not in self._queueing:
                channel_bytes = channel.encode()
                receivers = await self._pipe(node).execute(
                    [[b"PUBLISH", channel_bytes, envelope] for envelope in envelopes])
                refused = next((r for r in receivers if not isinstance(r, int)), None)
                if refused is not None:
                    raise RespError(f"Redis refused PUBLISH: {refused}")
                missed = [e for e, n in zip(envelopes, receivers, strict=True) if not n]
                if not missed:
                    return
                self._queueing.add(node)
                envelopes = missed
            pipe = self._client(node).pipeline(transaction=False)
            for envelope in envelopes:
                pipe.eval(_PUBLISH_OR_QUEUE, 1, key, channel, envelope, self.inbox_cap)
            went_live = await pipe.execute()
            self.counters["backlogged"] += went_live.count(0)
            if went_live[-1] == 1:
                self._queueing.discard(node)
        except (RedisError, OSError) as exc:
            raise self._fail(node, exc) from None

    async def read(self, node: str, count: int, block_ms: int) -> list[Entry]:
        subscription = self._subscriptions.get(node)
        if subscription is None:
            subscription = await self._subscribe(node)
        if node in self._draining:
            entries = await self._read_backlog(node, count)
            if entries:
                return entries
            self._draining.discard(node)
        try:
            messages = await subscription.read(count, block_ms / 1000)
        except RespError as exc:
            # Redis restarted, or dropped us for reading too slowly: subscribe again (and
            # take the backlog first) on the next read.
            await self._drop_subscription(node)
            raise self._fail(node, exc) from None
        return [(LIVE_ENTRY_ID, m) for m in messages]

    async def _subscribe(self, node: str) -> InboxSubscription:
        subscription = InboxSubscription(self.cluster.node(node).redis_url,
                                         self.inbox_key(node).encode(), self.connect_timeout)
        try:
            await subscription.open()
        except RespError as exc:
            await subscription.close()
            raise self._fail(node, exc) from None
        self._subscriptions[node] = subscription
        self._draining.add(node)
        return subscription

    async def _drop_subscription(self, node: str) -> None:
        subscription = self._subscriptions.pop(node, None)
        if subscription is not None:
            await subscription.close()

    async def _read_backlog(self, node: str, count: int) -> list[Entry]:
        key = self.inbox_key(node)
        cursor = self._read_cursor.get(node, b"0-0")
        client = self._reader(node)
        try:
            pipe = client.pipeline(transaction=False)
            if cursor != self._acked.get(node, b"0-0"):
                # Trim what the previous read returned (it has been handled) in the same round
                # trip as the next read.
                pipe.execute_command("XTRIM", key, "MINID", next_entry_id(cursor))
            pipe.execute_command("XREAD", "COUNT", count, "STREAMS", key, cursor)
            reply = (await pipe.execute())[-1]
            self._acked[node] = cursor
        except (RedisError, OSError) as exc:
            raise self._fail(node, exc) from None
        if not reply:
            return []
        stream = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        entries = [(entry_id, fields[b"d"] if isinstance(fields, dict) else fields[1])
                   for entry_id, fields in stream]
        if entries:
            self._read_cursor[node] = entries[-1][0]
        return entries

    async def discard_backlog(self, node: str) -> int:
        key = self.inbox_key(node)
        try:
            # One MULTI: the count and the cut are of the same backlog.
            pipe = self._reader(node).pipeline(transaction=True)
            pipe.xlen(key)
            pipe.xrevrange(key, count=1)
            length, newest = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._fail(node, exc) from None
        if newest:
            # The first backlog read trims up to the cut in its own round trip and reads
            # only what was queued after it: no time spent draining a dead process's inbox.
            self._read_cursor[node] = newest[0][0]
        return int(length)

    async def stop_reading(self, node: str) -> list[Entry]:
        subscription = self._subscriptions.pop(node, None)
        if subscription is None:
            return []
        remaining = await subscription.unsubscribe(self.connect_timeout)
        await subscription.close()
        self._draining.discard(node)
        return [(LIVE_ENTRY_ID, m) for m in remaining]

    async def ack(self, node: str) -> None:
        cursor = self._read_cursor.get(node)
        if cursor is not None and cursor != self._acked.get(node):
            await self._reader(node).execute_command("XTRIM", self.inbox_key(node), "MINID",
                                                     next_entry_id(cursor))
            self._acked[node] = cursor

    async def inbox_length(self, node: str) -> int:
        return int(await self._client(node).xlen(self.inbox_key(node)))

    async def channel_push(self, node: str, channel: str, data: bytes, capacity: int,
                           ttl_ms: int) -> bool:
        try:
            pushed = await self._client(node).eval(
                _CHANNEL_PUSH, 1, self.channel_key(channel), data, capacity, ttl_ms)
        except (RedisError, OSError) as exc:
            raise self._fail(node, exc) from None
        return bool(pushed)

    async def channel_pop(self, node: str, channel: str, timeout: float) -> bytes | None:
        try:
            reply = await self._client(node).blpop([self.channel_key(channel)],
                                                   timeout=max(timeout, 0.01))
        except (RedisError, OSError) as exc:
            raise self._fail(node, exc) from None
        return reply[1] if reply else None

    async def put_stats(self, node: str, blob: bytes, ttl_s: int) -> None:
        await self._client(node).set(self.stats_key(node), blob, ex=ttl_s)

    async def get_stats(self, node: str) -> bytes | None:
        return await self._client(node).get(self.stats_key(node))

    async def flush(self) -> None:
        done: set[str] = set()
        for node in self.cluster.nodes:
            if node.redis_url in done:
                continue
            done.add(node.redis_url)
            client = self._client(node.name)
            leases = tuple(key.encode() for key in self.lease_keys(""))  # their prefixes
            keys = [key async for key in client.scan_iter(match=f"{self.prefix}:*", count=1000)
                    if not key.startswith(leases)]
            if keys:
                await client.delete(*keys)
        self._read_cursor.clear()
        self._acked.clear()

    async def listening(self, node: str) -> bool:
        """Whether ``node`` is running (subscribed to its inbox) right now."""
        try:
            reply = await self._client(node).pubsub_numsub(self.inbox_key(node))
        except (RedisError, OSError) as exc:
            raise self._fail(node, exc) from None
        return bool(reply and int(reply[0][1]) > 0)

    async def renew_lease(self, node: str, boot: str, ttl_ms: int) -> str | None:
        try:
            before = await self._client(node).eval(_RENEW_LEASE, 2, *self.lease_keys(node),
                                                   boot, ttl_ms)
        except (RedisError, OSError) as exc:
            raise self._fail(node, exc) from None
        return None if before is None else before.decode()

    async def drop_lease(self, node: str, boot: str) -> None:
        try:
            await self._client(node).eval(_DROP_LEASE, 1, self.lease_keys(node)[0], boot)
        except (RedisError, OSError) as exc:
            raise self._fail(node, exc) from None

    async def read_leases(self, nodes: Sequence[str]) -> dict[str, object]:
        async def read(node: str) -> object:
            try:
                holder, seen = await asyncio.wait_for(
                    self._client(node).mget(self.lease_keys(node)), self.connect_timeout)
            except (TimeoutError, RedisError, OSError):
                return LEASE_UNKNOWN
            if holder:
                return holder.decode()
            return None if seen else LEASE_NEVER_HELD

        holders = await asyncio.gather(*(read(node) for node in nodes))
        return dict(zip(nodes, holders, strict=True))

    async def ping(self, node: str) -> None:
        try:
            await self._client(node).ping()
        except (RedisError, OSError) as exc:
            raise self._fail(node, exc) from None

    async def close(self) -> None:
        for node in list(self._subscriptions):
            await self._drop_subscription(node)
        pipes = list(self._pipes.values())
        self._pipes.clear()
        for command_pipe in pipes:
            await command_pipe.close()
        clients = list(self._clients.values()) + list(self._readers.values())
        self._clients.clear()
        self._readers.clear()
        for client in clients:
            try:
                await client.aclose()
            except Exception:  # closing is best effort; the loop may already be going away
                logger.debug("error closing a Redis client", exc_info=True)
