"""Per-destination write queues: ordered, batched, one round trip per batch.

Everything a process sends to one node goes through that node's :class:`Outbox`, so the
receiver sees it in the order it was queued; whatever queues up while a write is in flight
leaves in the next write as one pipeline.

The queue is bounded (``outbox_limit``): a destination whose Redis stalls must not grow this
process without limit. Past the bound an envelope is refused, never queued: a caller waiting for
the write (a publish, a join's registration) gets :class:`OutboxFull` at once (the client sees
an error reply), a fire-and-forget envelope (a fan-out delivery, a heartbeat) is dropped; both
count in ``refused`` and in ``failed``, so a WS node re-sends its full membership (SYNC) once
the destination answers again.
"""
from __future__ import annotations

import asyncio
import logging

from channel_layer.settings import LayerSettings
from channel_layer.transport import Transport, TransportError

logger = logging.getLogger("channel_layer.outbox")


class OutboxFull(TransportError):
    """``outbox_limit`` envelopes already wait for this destination."""


class Outbox:
    def __init__(self, transport: Transport, node: str,
                 limit: int = LayerSettings.outbox_limit) -> None:
        self.transport = transport
        self.node = node
        self.limit = limit
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future | None] = []
        self._writer: asyncio.Task | None = None
        self.sent = 0
        self.failed = 0
        self.refused = 0  # envelopes turned away at the limit (also counted in failed)

    def put(self, envelope: bytes, ack: bool = False) -> asyncio.Future | None:
        """Queue one envelope. With ``ack``, the returned future resolves once the node's
        Redis holds it (or fails with the transport's error)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future() if ack else None
        if len(self._pending) >= self.limit:
            self.refused += 1
            self.failed += 1
            if self.refused == 1 or self.refused % 1000 == 0:  # a stall, not a flood of lines
                logger.warning("outbox to %s is full (%d envelopes waiting); %d refused so far",
                               self.node, len(self._pending), self.refused)
            if done is not None:
                done.set_exception(OutboxFull(
                    f"{self.limit} envelopes already wait for node {self.node}"))
            return done
        self._pending.append(envelope)
        self._waiters.append(done)
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        return done

    async def send(self, envelope: bytes) -> None:
        """Queue one envelope and return once the node's Redis holds it (or raise the
        transport's error). With no write in flight the caller writes it itself: no writer
        task and no loop iteration to start one (a publish's path). Whatever others queue
        meanwhile leaves behind it, in one batch."""
        if self._writer is not None:
            await self.put(envelope, ack=True)
            return
        loop = asyncio.get_running_loop()
        writing = self._writer = loop.create_future()  # what drain() waits for meanwhile
        try:
            await self.transport.push(self.node, [envelope])
        except Exception as exc:
            self.failed += 1
            logger.warning("could not write 1 envelope to %s: %s", self.node, exc)
            raise
        else:
            self.sent += 1
        finally:
            self._writer = loop.create_task(self._write()) if self._pending else None
            writing.set_result(None)

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
