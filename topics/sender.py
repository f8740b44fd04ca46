"""In-order sends to one WebSocket, without a task per frame.

A fastlane broadcast arrives as a plain function call on the connection's loop; it cannot
``await``. ASGI ``send`` is a coroutine, but under daphne (and uvicorn's wsproto) it finishes
without ever suspending, so :class:`OrderedSender` runs it to completion right there. When a
server does suspend (flow control on a slow client), the rest of that send and every later
frame go through one task, in order, up to ``max_pending`` frames; past that the connection is
too slow to serve and :meth:`send_nowait` says so.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

Send = Callable[[dict], Awaitable[None]]


class SendQueueFull(Exception):
    """The client reads slower than it is sent to."""


async def _finish(coro: Coroutine, awaiting: Any) -> None:
    """Continue a coroutine that was started by hand and suspended on ``awaiting``."""
    while True:
        if awaiting is None:
            await asyncio.sleep(0)  # a bare yield
        else:
            # Wait for the future it is blocked on without awaiting it a second time; the
            # coroutine reads the result (or the exception) itself when resumed.
            await asyncio.wait((awaiting,))
        try:
            awaiting = coro.send(None)
        except StopIteration:
            return


class OrderedSender:
    def __init__(self, send: Send, max_pending: int) -> None:
        self._send = send
        self.max_pending = max_pending
        self._pending: deque[dict] = deque()
        self._flusher: asyncio.Task | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """Nothing is waiting to go out: a frame written by other means keeps its place."""
        return self._flusher is None

    def send_nowait(self, message: dict) -> bool:
        """Send now if the server lets us, else queue; False when the queue is full."""
        if self._flusher is not None:
            if len(self._pending) >= self.max_pending:
                return False
            self._pending.append(message)
            return True
        coro = self._send(message)
        try:
            awaiting = coro.send(None)
        except StopIteration:
            return True
        self._flusher = asyncio.get_running_loop().create_task(self._flush(coro, awaiting))
        return True

    async def send(self, message: dict) -> None:
        """For coroutines: the same queue, then wait until it has gone out."""
        if not self.send_nowait(message):
            raise SendQueueFull(f"more than {self.max_pending} frames waiting for a slow client")
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self, coro: Coroutine, awaiting: Any) -> None:
        try:
            await _finish(coro, awaiting)
            while self._pending:
                await self._send(self._pending.popleft())
        finally:
            self._flusher = None
