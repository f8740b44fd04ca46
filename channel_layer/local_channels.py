"""The process-specific channels that live in this process, and how they are woken.

A :class:`LocalChannel` is a bounded FIFO plus at most one waiting receiver. Messages arrive
on the runtime's I/O thread (from the inbox) or on a consumer's own loop (a local ``send``);
receivers may sit on any event loop (``async_to_sync`` makes new ones). Appends and pops are
single deque operations (atomic under the GIL), and a receiver re-checks the queue after
registering itself, so no wake-up is lost between threads.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable


class LocalChannel:
    __slots__ = ("queue", "capacity", "waiter", "last_used")

    def __init__(self, capacity: int) -> None:
        self.queue: deque[tuple[float, dict]] = deque()
        self.capacity = capacity
        self.waiter: asyncio.Future | None = None
        self.last_used = time.monotonic()

    def take(self, now: float) -> tuple[dict | None, int]:
        """The oldest unexpired message (or None) and how many expired ones were dropped."""
        expired = 0
        queue = self.queue
        while queue:
            expires_at, message = queue.popleft()
            if expires_at >= now:
                return message, expired
            expired += 1
        return None, expired


def _wake_all(waiters: Iterable[asyncio.Future]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


class Wakeups:
    """Collects the receivers to wake while a batch is delivered; wakes each loop once."""

    __slots__ = ("_by_loop",)

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}

    def add(self, waiter: asyncio.Future) -> None:
        self._by_loop.setdefault(waiter.get_loop(), []).append(waiter)

    def fire(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, waiters in self._by_loop.items():
            if loop is running:
                _wake_all(waiters)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_wake_all, waiters)
        self._by_loop.clear()
