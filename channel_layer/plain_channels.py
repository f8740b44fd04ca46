"""Plain (not process-specific) channels: a Redis list on the owner of the channel's name, so
any process can send to one and any process can receive from it.

A receive pops on the runtime's loop into a buffer and takes from the buffer on the caller's:
a pop whose receive() was cancelled lands in the buffer for the next receive() instead of being
lost. A buffer goes when it empties, so channels nobody reads any more hold nothing.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from channel_layer import wire
from channel_layer.transport import Transport

T = TypeVar("T")


class PlainChannels:
    def __init__(self, counters: Counter, owner_of: Callable[[str], str],
                 transport: Callable[[], Transport],
                 call: Callable[[Awaitable[T]], Awaitable[T]]) -> None:
        self.counters = counters
        self._owner_of = owner_of
        self._transport = transport  # the runtime's, once it has booted
        self._call = call  # run on the runtime's loop
        self.buffers: dict[str, deque[bytes]] = {}  # only channels with messages
        # Pops run on the runtime's loop, and receive() may be on another thread.
        self._lock = threading.Lock()

    async def send(self, channel: str, expires_at: float, data: bytes, capacity: int) -> bool:
        """Queue on ``channel``; False when it holds ``capacity`` messages already."""
        ttl_ms = int(max(expires_at - time.time(), 0.001) * 1000)
        return await self._transport().channel_push(
            self._owner_of(channel), channel, wire.encode([expires_at, data]), capacity, ttl_ms)

    async def receive(self, channel: str) -> dict:
        while True:
            while (popped := self._take(channel)) is not None:
                expires_at, data = wire.decode_plain(popped)
                if expires_at >= time.time():
                    return wire.decode_message(data)
                self.counters["expired"] += 1
            # Shielded: if this receive() is cancelled, a message already popped from Redis
            # lands in the buffer for the next receive() instead of being lost.
            await asyncio.shield(self._call(self._pop(channel)))

    async def _pop(self, channel: str) -> None:
        data = await self._transport().channel_pop(self._owner_of(channel), channel, 1.0)
        if data is not None:
            with self._lock:
                self.buffers.setdefault(channel, deque()).append(data)

    def _take(self, channel: str) -> bytes | None:
        """The oldest message popped for ``channel`` and not yet returned."""
        with self._lock:
            buffer = self.buffers.get(channel)
            if not buffer:
                return None
            popped = buffer.popleft()
            if not buffer:
                del self.buffers[channel]
            return popped

    def clear(self) -> None:
        with self._lock:
            self.buffers.clear()
