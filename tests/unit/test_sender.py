"""OrderedSender: synchronous when the server allows, in order and bounded when it does not."""
from __future__ import annotations

import asyncio

import pytest

from tests.support.waiting import settle_until
from topics.transport.sender import OrderedSender, SendQueueFull

LOOP_TURNS_FOR_A_WRONG_SEND = 10  # a send runs within a turn or two of being started


class Server:
    """An ASGI send that can be made to block (flow control)."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.gate: asyncio.Event | None = None

    async def send(self, message: dict) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(message["n"])


async def test_a_send_that_never_suspends_completes_on_the_spot():
    server = Server()
    sender = OrderedSender(server.send, max_pending=10, max_pending_bytes=1 << 20)
    for n in range(3):
        assert sender.send_nowait({"n": n})
        assert server.sent == list(range(n + 1))  # no task, no loop turn needed
    assert sender.pending == 0


async def test_backpressure_keeps_order_and_is_bounded():
    server = Server()
    server.gate = asyncio.Event()
    sender = OrderedSender(server.send, max_pending=2, max_pending_bytes=1 << 20)
    assert sender.send_nowait({"n": 0})  # suspends inside the server
    assert sender.send_nowait({"n": 1}) and sender.send_nowait({"n": 2})
    assert not sender.send_nowait({"n": 3})  # the client is too slow: refused, not queued
    with pytest.raises(SendQueueFull):
        await sender.send({"n": 4})
    server.gate.set()
    await settle_until(lambda: sender.pending == 0, "the client to catch up")
    await sender.send({"n": 5})  # ... and sends are accepted again
    assert server.sent == [0, 1, 2, 5]


async def test_coroutine_sends_wait_behind_queued_frames():
    server = Server()
    server.gate = asyncio.Event()
    sender = OrderedSender(server.send, max_pending=10, max_pending_bytes=1 << 20)
    sender.send_nowait({"n": 0})
    sender.send_nowait({"n": 1})
    waiting = asyncio.ensure_future(sender.send({"n": 2}))
    for _ in range(LOOP_TURNS_FOR_A_WRONG_SEND):
        await asyncio.sleep(0)  # a loop turn: a send that skipped the queue would run here
    assert server.sent == [] and not waiting.done()
    server.gate.set()
    await asyncio.wait_for(waiting, 1)
    assert server.sent == [0, 1, 2]


async def test_the_queue_is_bounded_by_bytes_as_well_as_frames():
    # A few large frames must not cost unbounded memory (1000 frames of 200 KB = 200 MB).
    server = Server()
    server.gate = asyncio.Event()
    sender = OrderedSender(server.send, max_pending=1000, max_pending_bytes=250_000)
    assert sender.send_nowait({"n": 0, "text": "x" * 200_000})  # suspends inside the server
    assert sender.send_nowait({"n": 1, "text": "x" * 200_000})
    assert sender.pending_bytes == 200_000
    assert not sender.send_nowait({"n": 2, "bytes": b"x" * 60_000})  # over the byte bound
    assert sender.send_nowait({"n": 3, "bytes": b"x" * 40_000})
    server.gate.set()
    await sender.send({"n": 4})
    assert server.sent == [0, 1, 3, 4] and sender.pending_bytes == 0
