"""Log lines that a flood must not multiply: at most one line per key each interval.

A refused handshake (``topics.transport.handshake``) and a crashed topic handler
(``topics.transport.consumer``) are worth a line each, with the why (a traceback for a crash),
but a client retrying in a loop, or a handler that fails for every message, would otherwise
write the same line thousands of times a second. :class:`LineLimiter` lets one line per key
through each ``interval`` and tells the next one how many it held back meanwhile.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class LineLimiter:
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[Hashable, float] = {}
        self._quiet: dict[Hashable, int] = {}

    def admit(self, key: Hashable) -> int | None:
        """None when a line for ``key`` went out less than ``interval`` ago (this one is held
        back and counted); else how many were held back since the last line for ``key``."""
        now, last = self.clock(), self._last.get(key)
        if last is not None and now - last < self.interval:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._quiet.pop(key, 0)


def held_back(count: int) -> str:
    """The suffix of a line that stands for ``count`` held-back ones ("" for none)."""
    return f" ({count} more since the last such line)" if count else ""
