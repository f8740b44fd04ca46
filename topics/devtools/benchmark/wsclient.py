"""A minimal WebSocket client for the load generator: as little CPU per received frame as possible.

The generator shares the machine's two cores with the servers it measures, so its own cost per
delivery decides how much of the machine is left to them. A general-purpose client (the
``websockets`` package) spends tens of microseconds per message on its frame reader, UTF-8
validation, message queue and task wake-ups; here a received buffer is cut into frames in one
loop and each text message is handed to a callback synchronously.

It speaks exactly what the benchmark needs (RFC 6455): the opening handshake, masked text
frames out, unfragmented unmasked frames in (server frames are never masked), pings answered,
a close frame ends the connection. No extensions are offered. With ``text_as_bytes`` a text
message reaches the callback as its UTF-8 bytes, undecoded (the load generator's byte search).

Masking keys come from a seeded ``random.Random``, not ``os.urandom``: a key per frame is a
``getrandom`` system call per publish otherwise, and a server cannot tell the difference.
"""
from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_MASK_KEYS = random.Random(os.urandom(16))


class HandshakeError(ConnectionError):
    pass


def _mask(payload: bytes, key: bytes) -> bytes:
    # XOR with the repeated 4-byte key, as one big-integer operation.
    size = len(payload)
    if not size:
        return payload
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    key = _MASK_KEYS.randbytes(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + key + _mask(payload, key)


class RawWebSocket(asyncio.Protocol):
    """One connection; ``on_text(str)`` is called for every text message, in order (with
    ``text_as_bytes``: ``on_text(bytes)``, the message undecoded), and ``on_binary(bytes)``
    (when given) for every binary message. ``close_code`` is the code of the server's close
    frame (None before one, or for a close frame without a code)."""

    def __init__(self, on_text: Callable[[str], None],
                 on_binary: Callable[[bytes], None] | None = None,
                 text_as_bytes: bool = False) -> None:
        self.on_text = on_text
        self.text_as_bytes = text_as_bytes
        self.on_binary = on_binary
        self.close_code: int | None = None
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self._open = False
        self._fragments: list[bytes] = []

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self._open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            status = buffer[:buffer.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self._fail(HandshakeError(status.decode("latin-1", "replace")))
                return
            self._open = True
            if not self.handshake.done():
                self.handshake.set_result(None)
            buffer = buffer[end + 4:]
        self._buffer = self._frames(buffer)

    def _frames(self, buffer: bytes) -> bytes:
        """Handle every complete frame in ``buffer``; return the incomplete rest."""
        pos, size = 0, len(buffer)
        on_text = self.on_text
        decode = not self.text_as_bytes
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[start:start + 2], "big")
                start += 2
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[start:start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode == OP_TEXT and b0 & 0x80:
                on_text(buffer[start:end].decode() if decode else buffer[start:end])
            elif opcode == OP_BINARY and b0 & 0x80:
                if self.on_binary is not None:
                    self.on_binary(buffer[start:end])
            elif opcode in (OP_TEXT, OP_CONT):
                self._fragments.append(buffer[start:end])
                if b0 & 0x80:
                    message = b"".join(self._fragments)
                    on_text(message.decode() if decode else message)
                    self._fragments = []
            elif opcode == OP_PING:
                self.transport.write(client_frame(OP_PONG, buffer[start:end]))
            elif opcode == OP_CLOSE:
                if length >= 2:
                    self.close_code = int.from_bytes(buffer[start:start + 2], "big")
                self.transport.write(client_frame(OP_CLOSE, buffer[start:start + 2]))
                self.transport.close()
                return b""
            pos = end
        return buffer[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        self._fail(exc or ConnectionError("closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------------- use
    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode())

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """Send one message of any opcode with any payload (hostile-input tests send text
        that is not UTF-8, and binary frames)."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the connection is closed")
        self.transport.write(client_frame(opcode, payload))

    def send_texts(self, texts: list[str]) -> None:
        """Several text messages in one write (one send system call, not one per message)."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the connection is closed")
        self.transport.write(b"".join(client_frame(OP_TEXT, t.encode()) for t in texts))

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_CLOSE, struct.pack("!H", 1000)))
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 2)
            except TimeoutError:
                self.transport.close()


async def connect(url: str, on_text: Callable[[str], None], timeout: float = 30.0,
                  on_binary: Callable[[bytes], None] | None = None,
                  text_as_bytes: bool = False) -> RawWebSocket:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    _, ws = await asyncio.wait_for(
        loop.create_connection(lambda: RawWebSocket(on_text, on_binary, text_as_bytes), host,
                               port), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    ws.transport.write((
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "\r\n").encode())
    await asyncio.wait_for(asyncio.shield(ws.handshake), timeout)
    return ws
