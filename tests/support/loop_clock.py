"""Virtual time on the test's own event loop, for the product's timers that read it.

The consumer's idle timeout, the long-poll session expiry and the publish gate all read
``loop.time()`` and schedule with ``loop.call_at``; a test that moves that clock forward sees
them fire at once instead of waiting on the real clock. Timers on other loops (a layer runtime
on its own thread) keep real time.
"""
from __future__ import annotations

import asyncio

SETTLE_TURNS = 20  # loop turns after a jump: the due timers run, and the tasks they start a step


class LoopClock:
    """``loop.time()`` becomes the real time plus every :meth:`advance` so far."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._real_time = loop.time
        self.offset = 0.0
        loop.time = self.time  # an instance attribute: shadows the method for this loop only

    def time(self) -> float:
        return self._real_time() + self.offset

    async def advance(self, seconds: float) -> None:
        """Moves the clock ``seconds`` on and lets the loop run what fell due."""
        self.offset += seconds
        for _ in range(SETTLE_TURNS):
            await asyncio.sleep(0)  # one loop turn: the due timers run

    def restore(self) -> None:
        del self._loop.time
