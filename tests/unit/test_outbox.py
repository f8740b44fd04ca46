"""Outbox: ordered batches to one destination, bounded by outbox_limit."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from channel_layer.memory_transport import MemoryTransport
from channel_layer.outbox import Outbox, OutboxFull
from channel_layer.settings import LayerSettings
from channel_layer.transport import TransportError


class GatedTransport(MemoryTransport):
    """Writes wait for the gate: a destination whose Redis stalls."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()
        self.batches: list[list[bytes]] = []

    async def push(self, node: str, envelopes: Sequence[bytes]) -> None:
        self.writing.set()
        await self.gate.wait()
        self.batches.append(list(envelopes))


def test_the_default_limit_is_a_named_setting() -> None:
    assert LayerSettings().outbox_limit == 10_000
    assert LayerSettings.from_config({"outbox_limit": 5}).outbox_limit == 5


async def test_past_the_limit_envelopes_are_refused_and_counted_and_the_rest_keep_order(
) -> None:
    transport = GatedTransport()
    outbox = Outbox(transport, "ws-a", limit=3)
    in_flight = outbox.put(b"0", ack=True)
    await transport.writing.wait()  # b"0" is in flight to the stalled destination
    queued = [outbox.put(f"{i}".encode(), ack=True) for i in (1, 2, 3)]
    refused = outbox.put(b"4", ack=True)
    assert refused is not None and refused.done()
    with pytest.raises(OutboxFull, match="3 envelopes already wait for node ws-a"):
        refused.result()
    assert outbox.put(b"5") is None  # fire-and-forget: dropped
    assert (outbox.refused, outbox.failed) == (2, 2)

    transport.gate.set()
    await asyncio.gather(in_flight, *queued)
    await outbox.drain()
    assert transport.batches == [[b"0"], [b"1", b"2", b"3"]]
    assert outbox.sent == 4
    assert outbox.put(b"6", ack=True) is not None  # room again once the writes went out
    await outbox.drain()
    assert transport.batches[-1] == [b"6"]


class RecordingTransport:
    """Records each push with the task that made it; a push waits until ``release`` is set."""

    def __init__(self) -> None:
        self.pushes: list[tuple[list[bytes], asyncio.Task | None]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_next = False

    async def push(self, node: str, envelopes: list[bytes]) -> None:
        self.pushes.append((list(envelopes), asyncio.current_task()))
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise TransportError("node down")


async def test_a_send_with_nothing_in_flight_is_written_by_its_caller() -> None:
    transport = RecordingTransport()
    outbox = Outbox(transport, "ts-a")
    await outbox.send(b"one")
    assert transport.pushes == [([b"one"], asyncio.current_task())]  # no writer task
    assert (outbox.sent, outbox._writer) == (1, None)


async def test_what_is_queued_behind_a_send_in_flight_leaves_after_it_in_one_batch() -> None:
    transport = RecordingTransport()
    transport.release.clear()
    outbox = Outbox(transport, "ts-a")
    first = asyncio.ensure_future(outbox.send(b"1"))
    await asyncio.sleep(0)  # the first send is in flight, written by its own task
    later = [asyncio.ensure_future(outbox.send(b"%d" % n)) for n in (2, 3)]
    await asyncio.sleep(0)  # both queued behind it
    outbox.put(b"4")
    await asyncio.sleep(0)  # one loop turn, no clock
    drained = asyncio.ensure_future(outbox.drain())
    await asyncio.sleep(0)  # one loop turn, no clock
    assert not drained.done()  # drain waits for the caller's own write too
    transport.release.set()
    await asyncio.gather(first, *later, drained)
    assert [batch for batch, _ in transport.pushes] == [[b"1"], [b"2", b"3", b"4"]]
    assert outbox.sent == 4 and outbox._writer is None


async def test_a_failed_send_raises_in_its_caller_and_is_counted() -> None:
    transport = RecordingTransport()
    transport.fail_next = True
    outbox = Outbox(transport, "ts-a")
    with pytest.raises(TransportError):
        await outbox.send(b"lost")
    assert (outbox.failed, outbox.sent) == (1, 0)
    await outbox.send(b"next")  # the outbox goes on
    assert outbox.sent == 1
