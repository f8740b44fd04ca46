"""A process's links to the other nodes: one ordered outbox per destination, and answers to
requests, for the topic server and the node runtime alike.

Everything a process sends to one node goes through that node's :class:`~channel_layer.outbox.Outbox`
(made on first use, kept for the process's loop). A request's answer is pushed onto the list the
asker named, in this process's own Redis (``NodeRuntime.request`` pops it there), by a task of
its own, so the inbox reader never waits on it; the tasks are kept here until done.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator

from channel_layer import wire
from channel_layer.outbox import Outbox
from channel_layer.settings import LayerSettings
from channel_layer.transport import Transport, TransportError

logger = logging.getLogger("channel_layer.peers")


class Peers:
    def __init__(self, transport: Transport, node: str | None, settings: LayerSettings) -> None:
        self.transport = transport
        self.node = node  # whose Redis holds the answers (None: a process without a node)
        self.settings = settings  # a newer layer instance may replace it (reconfigure)
        self.outboxes: dict[str, Outbox] = {}
        self._background: set[asyncio.Task] = set()

    def outbox(self, node: str) -> Outbox:
        outbox = self.outboxes.get(node)
        if outbox is None:
            outbox = self.outboxes[node] = Outbox(self.transport, node,
                                                  self.settings.outbox_limit)
        return outbox

    def __iter__(self) -> Iterator[Outbox]:
        return iter(list(self.outboxes.values()))

    async def drain(self) -> None:
        """Return once every envelope queued so far is written (or has failed)."""
        for outbox in self:
            await outbox.drain()

    @property
    def refused(self) -> int:
        """Envelopes turned away at ``outbox_limit``, over every destination."""
        return sum(outbox.refused for outbox in self.outboxes.values())

    def clear(self) -> None:
        self.outboxes.clear()

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` beside the inbox reader, kept until done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def spawn_answer(self, reply: str, answer: object) -> None:
        self.spawn(self.answer(reply, answer))

    async def answer(self, reply: str, answer: object) -> None:
        try:
            await self.transport.channel_push(
                self.node, reply, wire.encode_message(answer, self.settings.max_message_bytes),
                1, int(self.settings.confirm_timeout * 2000))
        except TransportError as exc:  # the asker times out and says so
            logger.warning("could not answer a request: %s", exc)
