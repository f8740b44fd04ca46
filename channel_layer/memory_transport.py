"""The node transport's contract inside one process and one event loop: the embedded cluster
(``runserver``, the embedded ``runcluster`` default) and the unit tests. Same semantics as
:class:`channel_layer.transport.RedisTransport`, with inboxes, channels, stats and leases in
dicts."""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence

from channel_layer.transport import (
    LEASE_LAPSED,
    LEASE_NEVER_HELD,
    Entry,
    Transport,
    resolve_if_pending,
)


class MemoryTransport(Transport):
    """The same contract in one process and one event loop: the embedded cluster."""

    def __init__(self, prefix: str = "dps", inbox_cap: int = 100_000) -> None:
        super().__init__(prefix, inbox_cap)
        self._inboxes: dict[str, deque[bytes]] = {}
        self._readers: dict[str, asyncio.Future] = {}
        self._channels: dict[str, deque[bytes]] = {}
        self._stats: dict[str, bytes] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # node -> (boot, expires: monotonic)
        self._seq = 0

    def _inbox(self, node: str) -> deque[bytes]:
        inbox = self._inboxes.get(node)
        if inbox is None:
            inbox = self._inboxes[node] = deque(maxlen=self.inbox_cap)
        return inbox

    async def push(self, node: str, envelopes: Sequence[bytes]) -> None:
        self._inbox(node).extend(envelopes)
        reader = self._readers.pop(node, None)
        if reader is not None and not reader.done():
            reader.set_result(None)

    async def read(self, node: str, count: int, block_ms: int) -> list[Entry]:
        inbox = self._inbox(node)
        if not inbox and block_ms:
            loop = asyncio.get_running_loop()
            arrived = self._readers[node] = loop.create_future()
            timer = loop.call_later(block_ms / 1000, resolve_if_pending, arrived)
            try:
                await arrived
            finally:
                timer.cancel()
        batch = []
        while inbox and len(batch) < count:
            self._seq += 1
            batch.append((str(self._seq).encode(), inbox.popleft()))
        return batch

    async def inbox_length(self, node: str) -> int:
        return len(self._inbox(node))

    async def channel_push(self, node: str, channel: str, data: bytes, capacity: int,
                           ttl_ms: int) -> bool:
        queue = self._channels.setdefault(channel, deque())
        if len(queue) >= capacity:
            return False
        queue.append(data)
        return True

    async def channel_pop(self, node: str, channel: str, timeout: float) -> bytes | None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            queue = self._channels.get(channel)
            if queue:
                return queue.popleft()
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.005)

    async def put_stats(self, node: str, blob: bytes, ttl_s: int) -> None:
        self._stats[node] = blob

    async def get_stats(self, node: str) -> bytes | None:
        return self._stats.get(node)

    async def listening(self, node: str) -> bool:
        return True  # every node of the embedded cluster lives in this process

    def _holder(self, node: str) -> str | None:
        lease = self._leases.get(node)
        return lease[0] if lease and lease[1] > time.monotonic() else None

    async def renew_lease(self, node: str, boot: str, ttl_ms: int) -> str | None:
        seen = node in self._leases
        before = self._holder(node)
        self._leases[node] = (boot, time.monotonic() + ttl_ms / 1000)
        return before if before is not None else (LEASE_LAPSED if seen else None)

    async def drop_lease(self, node: str, boot: str) -> None:
        if self._holder(node) == boot:
            self._leases[node] = ("", 0.0)

    async def read_leases(self, nodes: Sequence[str]) -> dict[str, object]:
        return {node: self._holder(node) if node in self._leases else LEASE_NEVER_HELD
                for node in nodes}

    async def flush(self) -> None:
        for inbox in self._inboxes.values():
            inbox.clear()
        self._channels.clear()
        self._stats.clear()
