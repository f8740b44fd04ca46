"""The process-specific channels that live in this process, and how they are woken.

A :class:`LocalChannel` is a bounded FIFO plus at most one waiting receiver. Messages arrive
on the runtime's I/O thread (from the inbox) or on a consumer's own loop (a local ``send``);
receivers may sit on any event loop (``async_to_sync`` makes new ones). Appends and pops are
single deque operations (atomic under the GIL), and a receiver re-checks the queue after
registering itself, so no wake-up is lost between threads.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger("channel_layer.local_channels")


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


class Fastlane:
    """A member that takes group messages by direct call on its own loop (Phoenix's
    fastlane): no queue, no receiver task to wake, one loop hop per batch for all of them."""

    __slots__ = ("loop", "deliver")

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[dict], None]) -> None:
        self.loop = loop
        self.deliver = deliver


def _run_batch(waiters: list[asyncio.Future], calls: list[tuple[Callable, dict]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    for deliver, message in calls:
        try:
            deliver(message)
        except Exception:  # one member's failure must not cost the others their message
            logger.exception("fastlane delivery failed")


class Wakeups:
    """Collects, while a batch is delivered, the receivers to wake and the fastlane calls to
    make; then hops onto each loop once."""

    __slots__ = ("_by_loop",)

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop,
                            tuple[list[asyncio.Future], list[tuple[Callable, dict]]]] = {}

    def _for(self, loop: asyncio.AbstractEventLoop):
        batch = self._by_loop.get(loop)
        if batch is None:
            batch = self._by_loop[loop] = ([], [])
        return batch

    def add(self, waiter: asyncio.Future) -> None:
        self._for(waiter.get_loop())[0].append(waiter)

    def call(self, lane: Fastlane, message: dict) -> None:
        self._for(lane.loop)[1].append((lane.deliver, message))

    def fire(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, (waiters, calls) in self._by_loop.items():
            if loop is running:
                _run_batch(waiters, calls)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_run_batch, waiters, calls)
        self._by_loop.clear()
