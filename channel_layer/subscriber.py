"""One node's subscription to its own inbox channel: messages pushed by Redis, no read commands.

A node receives on a Redis connection that has SUBSCRIBEd to ``<prefix>:inbox:<node>``; senders
PUBLISH to it (see ``transport``). Redis pushes every message down this connection as it is
published, in publish order, so reading costs no command at all. A received buffer is cut into
messages by hiredis in one go, so a burst becomes one batch.

The reader needs "every message already received, or wait up to N ms for the first one"
without a command, a task or a timeout wrapper per message, and a clean hand-over on stop
(UNSUBSCRIBE, then take what was pushed before Redis saw it): a bare ``resp`` connection.
"""
from __future__ import annotations

import asyncio

from channel_layer.resp import RespConnection, RespError


class InboxSubscription:
    def __init__(self, url: str, channel: bytes, connect_timeout: float) -> None:
        self.channel = channel
        self._conn = RespConnection(url, connect_timeout)
        self.unsubscribed = False

    async def open(self) -> None:
        """Connect, authenticate and subscribe; messages published after this returns are ours."""
        await self._conn.open()
        await self._conn.command([b"SUBSCRIBE", self.channel])

    def _take(self, count: int, into: list[bytes]) -> None:
        """Move already received messages (up to ``count`` in all) into ``into``."""
        take = self._conn.take_reply
        while len(into) < count:
            reply = take()
            if reply is False:
                return
            kind = reply[0]
            if kind == b"message":
                into.append(reply[2])
            elif kind == b"unsubscribe":
                self.unsubscribed = True
                return

    async def read(self, count: int, block: float) -> list[bytes]:
        """Up to ``count`` messages: whatever has arrived, else the first within ``block`` s."""
        messages: list[bytes] = []
        self._take(count, messages)
        if messages or self.unsubscribed:
            return messages
        try:
            async with asyncio.timeout(block):
                while not messages and not self.unsubscribed:
                    await self._conn.fill()
                    self._take(count, messages)
        except TimeoutError:
            pass  # nothing received is lost: the next read takes it
        return messages

    async def unsubscribe(self, timeout: float) -> list[bytes]:
        """Stop receiving; return what Redis pushed before it saw the UNSUBSCRIBE. Anything
        published after that finds no subscriber (and goes to the node's backlog)."""
        if self.unsubscribed:
            return []
        remaining: list[bytes] = []
        try:
            self._conn.send([[b"UNSUBSCRIBE", self.channel]])
            async with asyncio.timeout(timeout):
                while not self.unsubscribed:
                    self._take(1 << 30, remaining)
                    if not self.unsubscribed:
                        await self._conn.fill()
        except (TimeoutError, RespError):
            pass
        return remaining

    async def close(self) -> None:
        await self._conn.close()
