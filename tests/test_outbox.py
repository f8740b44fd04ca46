"""Outbox: ordered batches to one destination, bounded by outbox_limit."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from channel_layer.outbox import Outbox, OutboxFull
from channel_layer.settings import LayerSettings
from channel_layer.transport import MemoryTransport


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
