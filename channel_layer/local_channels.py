"""The process-specific channels that live in this process, and how they are woken.

A :class:`LocalChannel` is a bounded FIFO plus the receivers waiting on it (Channels allows
several concurrent ``receive()`` calls on one channel; each message goes to one of them).
Messages arrive on the runtime's loop (from the inbox) or on a consumer's own loop (a local
``send``); receivers may sit on any event loop (``async_to_sync`` makes new ones). Appends and
pops are single deque operations (atomic under the GIL), and a receiver re-checks the queue
after registering itself, so no wake-up is lost between threads.

:class:`LocalChannels` is the node's table of them, with the fastlanes (members that take
group messages by direct call) and the housekeeping that forgets idle channels.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

logger = logging.getLogger("channel_layer.local_channels")


class LocalChannel:
    __slots__ = ("queue", "capacity", "waiters", "last_used")

    def __init__(self, capacity: int) -> None:
        self.queue: deque[tuple[float, dict]] = deque()
        self.capacity = capacity
        self.waiters: list[asyncio.Future] = []
        self.last_used = time.monotonic()

    def take(self, now: float) -> tuple[dict | None, int]:
        """The oldest unexpired message (or None) and how many expired ones were dropped."""
        expired = 0
        queue = self.queue
        while queue:
            try:
                expires_at, message = queue.popleft()
            except IndexError:  # another receiver took the last one
                break
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


# What a member's delivery raises when it writes to a connection that has just gone (the client
# aborted mid-broadcast, before the server told its consumer): a plain broken connection, and
# whatever the ASGI server's adapters register (the layer knows no server).
_client_gone: tuple[type[BaseException], ...] = (ConnectionError,)


def register_disconnect_errors(*types: type[BaseException]) -> None:
    """Count a delivery that raises one of ``types`` as a delivery to a closed client (a normal
    race), not as a failure."""
    global _client_gone
    _client_gone = tuple(dict.fromkeys((*_client_gone, *types)))


def _run_batch(waiters: list[asyncio.Future], calls: list[tuple[Callable, dict]],
               counters: Counter[str]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    for deliver, message in calls:
        try:
            deliver(message)
        except _client_gone as exc:  # a normal race, not a fault: count it
            counters["deliveries_to_closed_clients"] += 1
            logger.debug("fastlane delivery to a closed connection: %r", exc)
        except Exception:  # one member's failure must not cost the others their message
            counters["fastlane_delivery_errors"] += 1
            logger.exception("fastlane delivery failed")


class Wakeups:
    """Collects, while a batch is delivered, the receivers to wake and the fastlane calls to
    make; then hops onto each loop once."""

    __slots__ = ("_by_loop", "_counters")

    def __init__(self, counters: Counter[str] | None = None) -> None:
        self._counters = Counter() if counters is None else counters  # failed deliveries
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
                _run_batch(waiters, calls, self._counters)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_run_batch, waiters, calls, self._counters)
        self._by_loop.clear()


class LocalChannels:
    """This node's process channels: create, queue, receive, sweep; and their fastlanes."""

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self.channels: dict[str, LocalChannel] = {}
        self.fastlanes: dict[str, Fastlane] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.channels)

    def get(self, channel: str, capacity: int) -> LocalChannel:
        """The channel, created with ``capacity`` if it does not exist yet."""
        local = self.channels.get(channel)
        if local is None:
            with self._lock:
                local = self.channels.get(channel)
                if local is None:
                    local = self.channels[channel] = LocalChannel(capacity)
        return local

    def is_full(self, channel: str, capacity: int) -> bool:
        local = self.get(channel, capacity)
        return len(local.queue) >= local.capacity

    def deliver(self, channel: str, expires_at: float, message: dict, wake: Wakeups,
                capacity: int) -> bool:
        """Queue on a channel of this process; False (and a counter) when it is full."""
        local = self.channels.get(channel) or self.get(channel, capacity)
        if len(local.queue) >= local.capacity:
            self.counters["dropped_channel_full"] += 1
            return False
        local.queue.append((expires_at, message))
        # Wake every waiter: each re-checks the queue, one takes the message, the others wait
        # again. Waking one only could lose the message to a receiver cancelled meanwhile.
        for waiter in local.waiters:
            wake.add(waiter)
        return True

    async def receive(self, channel: str, capacity: int) -> dict:
        loop = asyncio.get_running_loop()
        while True:
            local = self.get(channel, capacity)
            local.last_used = time.monotonic()
            message, expired = local.take(time.time())
            if expired:
                self.counters["expired"] += expired
            if message is not None:
                return message
            waiter = loop.create_future()
            with self._lock:
                if self.channels.get(channel) is not local:
                    continue  # swept between lookup and wait: use the new one
                local.waiters.append(waiter)
            try:
                if not local.queue:  # re-check: a message may have landed before we registered
                    await waiter
            finally:
                with self._lock:
                    local.waiters.remove(waiter)

    def add_fastlane(self, channel: str, lane: Fastlane) -> None:
        self.fastlanes[channel] = lane

    def remove_fastlane(self, channel: str) -> None:
        self.fastlanes.pop(channel, None)

    def clear_queues(self) -> None:
        """Drop every queued message (``flush``); receivers keep waiting on their channels."""
        for local in list(self.channels.values()):
            local.queue.clear()

    def sweep(self, now: float, idle_after: float) -> None:
        """Drop expired messages nobody is waiting for, and forget idle empty channels."""
        idle_before = time.monotonic() - idle_after
        for name, local in list(self.channels.items()):
            if local.waiters:
                continue
            while local.queue and local.queue[0][0] < now:
                local.queue.popleft()
                self.counters["expired"] += 1
            if not local.queue and local.last_used < idle_before:
                with self._lock:
                    if not local.waiters and not local.queue:
                        self.channels.pop(name, None)
