"""Bare Redis connections for the two hot paths: pushing envelopes and receiving them.

A node sends one PUBLISH per envelope and receives pushed messages; redis-py's general client
(connection pool, retry wrapper, response callbacks, a timeout per read) costs more CPU per
command than the rest of the route together. Here a command is encoded once, a batch is one
write, replies are cut out of each received buffer by hiredis, and pipelined batches are
matched to their callers in order. Everything else (backlog reads, stats, plain channels) stays
on redis-py.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
import struct
from collections import deque
from collections.abc import Callable

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

READ_CHUNK = 1 << 16
# Told that a connection is gone, with the error its waiting batches failed with.
LostCallback = Callable[["RespConnection", Exception], None]


class RespError(ConnectionError):
    """The connection failed, was closed, or Redis refused a command."""


def encode_commands(commands: list[list[bytes]]) -> bytes:
    parts = []
    for args in commands:
        parts.append(b"*%d\r\n" % len(args))
        for arg in args:
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class RespConnection:
    """One connection: ``send`` writes commands, ``next_reply``/``take_reply`` read replies (or
    pushed messages) in order."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()
        # CommandPipe's batches sent on this connection and awaiting their replies.
        self.batches: deque[tuple[int, list, asyncio.Future]] = deque()
        self._callback_mode = False

    async def open(self) -> None:
        params = parse_url(self.url)
        if "path" in params:
            connecting = asyncio.open_unix_connection(params["path"])
        else:
            tls = ssl_module.create_default_context() \
                if params.get("connection_class") is SSLConnection else None
            connecting = asyncio.open_connection(params.get("host", "localhost"),
                                                 params.get("port", 6379), ssl=tls)
        try:
            # Not wait_for: on Python 3.11 it can swallow a cancel that races the connect.
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await connecting
        except (OSError, TimeoutError) as exc:
            raise RespError(f"cannot connect: {exc or type(exc).__name__}") from None
        try:
            if params.get("password") is not None:
                auth = [b"AUTH", params["password"].encode()]
                if params.get("username"):
                    auth.insert(1, params["username"].encode())
                await self.command(auth)
            if params.get("db"):
                await self.command([b"SELECT", str(params["db"]).encode()])
        except BaseException:
            await self.close()  # refused or timed out: do not leave the socket open
            raise

    async def command(self, args: list[bytes]) -> object:
        """One command and its reply (for setting a connection up)."""
        self.send([args])
        async with asyncio.timeout(self.timeout):
            reply = await self.next_reply()
        if isinstance(reply, hiredis.ReplyError):
            raise RespError(f"Redis refused {args[0].decode()}: {reply}")
        return reply

    def send(self, commands: list[list[bytes]]) -> None:
        if self._writer is None:
            raise RespError("the connection is closed")
        self._writer.write(encode_commands(commands))

    def take_reply(self) -> object:
        """The next reply already received, or False."""
        return self._parser.gets()

    async def next_reply(self) -> object:
        while True:
            reply = self._parser.gets()
            if reply is not False:
                return reply
            await self.fill()

    async def fill(self) -> None:
        """Wait for more bytes (StreamReader.read is cancel-safe: nothing received is lost)."""
        if self._reader is None:
            raise RespError("the connection is closed")
        try:
            data = await self._reader.read(READ_CHUNK)
        except OSError as exc:
            raise RespError(f"connection failed: {exc}") from None
        if not data:
            raise RespError("Redis closed the connection")
        self._parser.feed(data)

    def answer_in_read_callback(self, on_lost: LostCallback) -> None:
        """From now on, match each received reply to its batch (``batches``) in the
        connection's read callback and resolve the batch's future there: no reader task,
        whose wake-up per reply was a hop of every publish and every fan-out write. Once the
        connection is gone, ``on_lost(self, error)`` is called (after every waiting batch has
        failed). Only for a connection that nothing reads with ``next_reply`` any more."""
        transport = self._writer.transport
        self._callback_mode = True
        transport.set_protocol(_ReplyMatcher(self, on_lost))

    def abort(self) -> None:
        """Drop the connection now, with whatever it has not sent yet (a reset, not a FIN
        behind unsent data): commands given up on must not reach Redis later, after a
        retry on a new connection already carried them."""
        writer, self._writer = self._writer, None
        self._reader = None
        if writer is None:
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        self._reader = None
        if writer is not None and self._callback_mode:
            # The stream's protocol no longer sees this connection: its wait_closed would
            # wait for ever. The transport's own close is all there is.
            writer.transport.close()
            return
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, RuntimeError):
                pass  # best effort: the loop may be going away


class _ReplyMatcher(asyncio.Protocol):
    """A command pipe's connection after its setup (``answer_in_read_callback``)."""

    def __init__(self, conn: RespConnection, on_lost: LostCallback) -> None:
        self.conn = conn
        self.on_lost = on_lost
        self.failure: Exception = RespError("Redis closed the connection")

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        parser, waiting = conn._parser, conn.batches
        parser.feed(data)
        while True:
            try:
                reply = parser.gets()
            except hiredis.ProtocolError as exc:
                self._broken(f"Redis sent what is not RESP: {exc}")
                return
            if reply is False:
                return
            if not waiting:  # a reply to nothing sent: this connection is out of step
                self._broken("a reply to no command")
                return
            count, replies, done = waiting[0]  # replies come back in the order sent
            replies.append(reply)
            if len(replies) == count:
                waiting.popleft()
                if not done.done():
                    done.set_result(replies)

    def _broken(self, why: str) -> None:
        self.failure = RespError(why)
        self.conn.abort()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        failure = RespError(f"connection failed: {exc}") if exc is not None else self.failure
        waiting = self.conn.batches
        while waiting:
            _, _, done = waiting.popleft()
            if not done.done():
                done.set_exception(failure)
                done.exception()  # its caller may have given up on it already
        self.conn._writer = None
        self.on_lost(self.conn, failure)

    def pause_writing(self) -> None:  # writes are bounded by the outboxes, not by drain()
        pass

    def resume_writing(self) -> None:
        pass


class CommandPipe:
    """Commands to one Redis over one connection, pipelined; each batch gets its replies."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._conn: RespConnection | None = None
        self._connecting: asyncio.Future | None = None

    async def execute(self, commands: list[list[bytes]]) -> list:
        """Send the batch in one write; its replies, in order (``hiredis.ReplyError`` values
        for commands Redis refused)."""
        conn = self._conn or await self._connect()
        done = asyncio.get_running_loop().create_future()
        conn.batches.append((len(commands), [], done))
        conn.send(commands)
        try:
            # A Redis that does not answer within the timeout is as good as unreachable (a
            # partition drops packets silently; TCP alone would wait for many minutes).
            # (Not shielded: a caller that gives up cancels its own batch's future, which the
            # reply matcher then skips; the other batches on the connection are untouched.)
            async with asyncio.timeout(self.timeout):
                return await done
        except TimeoutError:
            self._give_up(conn)
            raise RespError(f"no reply from Redis within {self.timeout:g}s") from None

    def _give_up(self, conn: RespConnection) -> None:
        """Fail every batch waiting on ``conn`` and drop it; the next batch reconnects."""
        if self._conn is not conn:
            return
        self._conn = None
        conn.abort()  # its connection_lost fails the waiters

    async def _connect(self) -> RespConnection:
        if self._connecting is not None:  # another batch is connecting: wait for it
            return await asyncio.shield(self._connecting)
        self._connecting = asyncio.get_running_loop().create_future()
        try:
            conn = RespConnection(self.url, self.timeout)
            await conn.open()
        except BaseException as exc:
            self._connecting.set_exception(exc if isinstance(exc, Exception) else RespError(
                "connecting was cancelled"))
            self._connecting.exception()  # retrieved here: waiters may be none
            self._connecting = None
            raise
        self._conn = conn
        conn.answer_in_read_callback(self._lost)
        self._connecting.set_result(conn)
        self._connecting = None
        return conn

    def _lost(self, conn: RespConnection, failure: Exception) -> None:
        """``conn`` is gone (every batch on it has failed): the next execute connects again."""
        if self._conn is conn:
            self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
