"""One node's subscription to its own inbox channel: messages pushed by Redis, no read commands.

A node receives on a Redis connection that has SUBSCRIBEd to ``<prefix>:inbox:<node>``; senders
PUBLISH to it (see ``transport``). Redis pushes every message down this connection as it is
published, in publish order, so reading costs no command at all. A received buffer is cut into
messages by hiredis in one go, so a burst becomes one batch.

This is deliberately a small client of its own rather than redis-py's ``PubSub``: the reader
needs "every message already received, or wait up to N ms for the first one" without a
command, a task or a timeout wrapper per message, and a clean hand-over on stop (UNSUBSCRIBE,
then take what was pushed before Redis saw it).
"""
from __future__ import annotations

import asyncio
import ssl as ssl_module

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

READ_CHUNK = 1 << 16


class SubscriptionError(ConnectionError):
    """The subscription connection failed or was closed by Redis."""


class InboxSubscription:
    def __init__(self, url: str, channel: bytes, connect_timeout: float) -> None:
        self.url = url
        self.channel = channel
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()
        self.unsubscribed = False

    async def open(self) -> None:
        """Connect, authenticate and subscribe; messages published after this returns are ours."""
        params = parse_url(self.url)
        if "path" in params:
            connecting = asyncio.open_unix_connection(params["path"])
        else:
            tls = ssl_module.create_default_context() \
                if params.get("connection_class") is SSLConnection else None
            connecting = asyncio.open_connection(params.get("host", "localhost"),
                                                 params.get("port", 6379), ssl=tls)
        self._reader, self._writer = await asyncio.wait_for(connecting, self.connect_timeout)
        if params.get("password") is not None:
            auth = [b"AUTH", params["password"].encode()]
            if params.get("username"):
                auth.insert(1, params["username"].encode())
            await self._command(auth, self.connect_timeout)
        await self._command([b"SUBSCRIBE", self.channel], self.connect_timeout)

    async def _command(self, args: list[bytes], timeout: float) -> object:
        self._send(args)
        async with asyncio.timeout(timeout):
            reply = await self._next_reply()
        if isinstance(reply, hiredis.ReplyError):
            raise SubscriptionError(f"Redis refused {args[0].decode()}: {reply}")
        return reply

    def _send(self, args: list[bytes]) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        self._writer.write(b"".join(parts))

    async def _next_reply(self) -> object:
        while True:
            reply = self._parser.gets()
            if reply is not False:
                return reply
            await self._fill()

    async def _fill(self) -> None:
        try:
            data = await self._reader.read(READ_CHUNK)
        except OSError as exc:
            raise SubscriptionError(f"subscription connection failed: {exc}") from None
        if not data:
            raise SubscriptionError("Redis closed the subscription connection")
        self._parser.feed(data)

    def _take(self, count: int, into: list[bytes]) -> None:
        """Move already received messages (up to ``count`` in all) into ``into``."""
        parser = self._parser
        while len(into) < count:
            reply = parser.gets()
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
                    await self._fill()
                    self._take(count, messages)
        except TimeoutError:
            pass  # StreamReader.read is cancel-safe: nothing received is lost
        return messages

    async def unsubscribe(self, timeout: float) -> list[bytes]:
        """Stop receiving; return what Redis pushed before it saw the UNSUBSCRIBE. Anything
        published after that finds no subscriber (and goes to the node's backlog)."""
        if self._writer is None or self.unsubscribed:
            return []
        self._send([b"UNSUBSCRIBE", self.channel])
        remaining: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                while not self.unsubscribed:
                    self._take(1 << 30, remaining)
                    if not self.unsubscribed:
                        await self._fill()
        except (TimeoutError, SubscriptionError):
            pass
        return remaining

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, RuntimeError):
                pass  # best effort: the loop may be going away
