"""Per-destination write queues: ordered, batched, one round trip per batch.

Everything a process sends to one node goes through that node's :class:`Outbox`, so the
receiver sees it in the order it was queued; whatever queues up while a write is in flight
leaves in the next write as one pipeline.
"""
from __future__ import annotations

import asyncio
import logging

from .transport import Transport

logger = logging.getLogger("channel_layer.outbox")


class Outbox:
    def __init__(self, transport: Transport, node: str) -> None:
        self.transport = transport
        self.node = node
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future | None] = []
        self._writer: asyncio.Task | None = None
        self.sent = 0
        self.failed = 0

    def put(self, envelope: bytes, ack: bool = False) -> asyncio.Future | None:
        """Queue one envelope. With ``ack``, the returned future resolves once the node's
        Redis holds it (or fails with the transport's error)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future() if ack else None
        self._pending.append(envelope)
        self._waiters.append(done)
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        return done

    async def drain(self) -> None:
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        try:
            while self._pending:
                batch, waiters = self._pending, self._waiters
                self._pending, self._waiters = [], []
                try:
                    await self.transport.push(self.node, batch)
                except Exception as exc:
                    self.failed += len(batch)
                    logger.warning("could not write %d envelope(s) to %s: %s",
                                   len(batch), self.node, exc)
                    for waiter in waiters:
                        if waiter is not None and not waiter.done():
                            waiter.set_exception(exc)
                    continue
                self.sent += len(batch)
                for waiter in waiters:
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
        finally:
            self._writer = None
