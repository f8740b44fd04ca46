"""Every socket's idle timeout on one loop timer: a wheel of one-second buckets.

A socket is closed after ``DPS_IDLE_TIMEOUT`` of client silence. With a loop timer per socket
(``call_later``, re-armed from the last receive when it fires early), 10,000 sockets keep
10,000 entries in the loop's timer heap, so every other ``call_later`` on the loop (a join's
confirmation timeout, a server's own timers) pays a log-n walk of Python-level comparisons, and
each re-arm is a timer of its own. Here a deadline goes into the bucket of its second and one
loop timer, armed for the earliest bucket, runs what is due: an idle close comes at most
``TICK`` seconds late.
"""
from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Callable

TICK = 1.0  # seconds per bucket: how late an idle close may come
logger = logging.getLogger(__name__)


class IdleTimer:
    """One scheduled callback; ``cancel()`` as an ``asyncio.TimerHandle``'s."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None  # left in its bucket, skipped when the bucket comes due


class IdleTimers:
    """The wheel of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, list[IdleTimer]] = {}
        self._armed: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None

    def call_at(self, when: float, callback: Callable[[], None]) -> IdleTimer:
        """Run ``callback`` at the first tick at or after ``when`` (loop time)."""
        timer = IdleTimer(callback)
        key = math.ceil(when / TICK)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = []
            if self._armed_for is None or key < self._armed_for:
                self._arm(key)
        bucket.append(timer)
        return timer

    def _arm(self, key: int) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_for = key
        self._armed = self._loop.call_at(key * TICK, self._fire)

    def _fire(self) -> None:
        self._armed = self._armed_for = None
        now_key = math.floor(self._loop.time() / TICK)
        for key in [k for k in self._buckets if k <= now_key]:
            for timer in self._buckets.pop(key):
                callback = timer.callback
                if callback is not None:
                    timer.callback = None
                    try:
                        callback()  # may schedule again (into a later bucket)
                    except Exception:  # one socket's fault must not skip the others' timeouts
                        logger.exception("idle timeout callback failed")
        if self._buckets and self._armed_for is None:
            self._arm(min(self._buckets))


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, IdleTimers] = \
    weakref.WeakKeyDictionary()


def idle_timers(loop: asyncio.AbstractEventLoop) -> IdleTimers:
    """The wheel of ``loop`` (made on first use)."""
    wheel = _WHEELS.get(loop)
    if wheel is None:
        wheel = _WHEELS[loop] = IdleTimers(loop)
    return wheel
