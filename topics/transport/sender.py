"""In-order sends to one WebSocket, without a task per frame.

A fastlane broadcast arrives as a plain function call on the connection's loop; it cannot
``await``. ASGI ``send`` is a coroutine, but under daphne (and uvicorn's wsproto) it finishes
without ever suspending, so :class:`OrderedSender` runs it to completion right there. When a
server does suspend (flow control on a slow client), the rest of that send and every later
frame go through one task, in order, up to ``max_pending`` frames or ``max_pending_bytes`` bytes
(whichever comes first: a few large frames must not cost unbounded memory); past that the
connection is too slow to serve and :meth:`send_nowait` says so.
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


def _size(message: dict) -> int:
    data = message.get("text") or message.get("bytes") or b""
    return len(data)  # characters for text: a lower bound of its bytes, and cheap


class OrderedSender:
    def __init__(self, send: Send, max_pending: int, max_pending_bytes: int) -> None:
        self._send = send
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._pending: deque[tuple[dict, int]] = deque()
        self._pending_bytes = 0
        self._flusher: asyncio.Task | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def idle(self) -> bool:
        """Nothing is waiting to go out: a frame written by other means keeps its place."""
        return self._flusher is None

    def send_nowait(self, message: dict) -> bool:
        """Send now if the server lets us, else queue; False when the queue is full."""
        if self._flusher is not None:
            size = _size(message)
            if (len(self._pending) >= self.max_pending
                    or self._pending_bytes + size > self.max_pending_bytes):
                return False
            self._pending.append((message, size))
            self._pending_bytes += size
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
            raise SendQueueFull(f"more than {self.max_pending} frames or "
                                f"{self.max_pending_bytes} bytes waiting for a slow client")
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self, coro: Coroutine, awaiting: Any) -> None:
        try:
            await _finish(coro, awaiting)
            while self._pending:
                message, size = self._pending.popleft()
                self._pending_bytes -= size
                await self._send(message)
        finally:
            self._flusher = None
