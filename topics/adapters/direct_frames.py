"""Broadcast frames written straight to the client's connection: Phoenix's fastlane, all the way.

A publish reaches every member on a node in one batch. Through ASGI, each copy then crosses the
server's WebSocket layer (autobahn under daphne, websockets under uvicorn): a message dict, a
debug-log check, a UTF-8 encode, a frame builder with its extension hooks, a deferred write.
Most of a WS node's CPU per delivery went there. A server-to-client text frame that is not
compressed is just a header and the UTF-8 bytes (RFC 6455 5.2: the server never masks; RFC 7692
6: a sender may leave any message uncompressed even when permessage-deflate is in use), so a
member with a :class:`DirectFrames` builds it in a few operations and hands it to the
connection's transport (which encrypts when TLS is in use).

Only connections whose server this module knows get a writer: daphne's autobahn protocol and
uvicorn's default (websockets sans-I/O) protocol. For anything else :func:`direct_frames_for`
returns None and the consumer keeps using ASGI ``send``. Replies and broadcasts share one
transport and are written synchronously, in the order the consumer makes them.
"""
from __future__ import annotations

import functools
import logging
import struct
from typing import Any

from topics.adapters.registry import DAPHNE, UVICORN, active
from topics.transport import ws_counters

logger = logging.getLogger(__name__)
_fallback_logged = False

_SHORT = struct.Struct("!BB").pack
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack
_FIN_TEXT = 0x81  # FIN + opcode 1 (text), no RSV bits: not compressed
_FIN_BINARY = 0x82  # FIN + opcode 2 (binary)
_SHORT_HEADERS = tuple(_SHORT(_FIN_TEXT, size) for size in range(126))


def text_frame_header(size: int) -> bytes:
    """The header of an unmasked frame carrying ``size`` bytes as one text message."""
    if size < 126:
        return _SHORT_HEADERS[size]
    return _long_header(_FIN_TEXT, size)


def binary_frame_header(size: int) -> bytes:
    """The header of an unmasked frame carrying ``size`` bytes as one binary message."""
    if size < 126:
        return _SHORT(_FIN_BINARY, size)
    return _long_header(_FIN_BINARY, size)


def _long_header(first: int, size: int) -> bytes:
    if size < 65536:
        return _MEDIUM(first, 126, size)
    return _LONG(first, 127, size)


def frame_header(size: int, binary: bool) -> bytes:
    return binary_frame_header(size) if binary else text_frame_header(size)


NOT_OPEN = -1


def _require(obj: Any, *names: str) -> None:
    """Fail now (AttributeError: the consumer keeps ASGI send) rather than on every broadcast
    when a server version lacks an internal this module reads."""
    for name in names:
        getattr(obj, name)


class DirectFrames:
    """Writes text messages to one open connection, bypassing the server's WebSocket layer.

    ``send(head, tail)`` writes the message ``head + tail`` (UTF-8; raw bytes in a binary
    frame with ``binary=True``) now and returns how many
    bytes of this connection are still waiting for the client (a slow client's backlog), or
    ``NOT_OPEN`` (nothing written) when the connection is closing, closed or cannot take a
    write now, and ASGI ``send`` must decide.
    """

    __slots__ = ()

    def send(self, head: bytes, tail: bytes, binary: bool = False) -> int:
        raise NotImplementedError


class _TwistedFrames(DirectFrames):
    """daphne: autobahn's protocol over a Twisted transport.

    Twisted's ``write`` only buffers: it registers the socket with the reactor, which sends on
    its next turn and unregisters it (two epoll_ctl calls and a callback per frame). On a plain
    TCP connection with nothing buffered, the frame goes to the socket at once and only what the
    kernel does not take is left to Twisted, in order.
    """

    __slots__ = ("_protocol", "_open", "_transport", "_socket")

    def __init__(self, protocol: Any) -> None:
        from twisted.internet import tcp

        self._protocol = protocol
        self._open = protocol.STATE_OPEN
        self._transport = transport = protocol.transport
        plain_tcp = type(transport) is tcp.Server and not transport.TLS
        self._socket = transport.socket if plain_tcp else None
        _require(transport, "_tempDataLen", "dataBuffer", "offset", "connected", "disconnecting")

    def send(self, head: bytes, tail: bytes, binary: bool = False) -> int:
        if self._protocol.state != self._open:
            return NOT_OPEN
        frame = frame_header(len(head) + len(tail), binary) + head + tail
        transport = self._transport
        sock = self._socket
        if (sock is None or transport._tempDataLen or transport.dataBuffer
                or transport.disconnecting or not transport.connected):
            transport.write(frame)
            return self._buffered()
        try:
            sent = sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return 0  # the connection is broken: Twisted's reader reports the loss
        if sent == len(frame):
            return 0
        transport.write(frame[sent:])
        return self._buffered()

    def _buffered(self) -> int:
        # Twisted's FileDescriptor: a list of pending chunks plus the partly written one.
        transport = self._transport
        return transport._tempDataLen + len(transport.dataBuffer) - transport.offset


class _AsyncioFrames(DirectFrames):
    """uvicorn's default protocol (websockets, sans-I/O) over an asyncio transport, whose
    ``write`` already sends at once when nothing is buffered."""

    __slots__ = ("_protocol", "_open", "_transport", "_conn", "_writable")

    def __init__(self, protocol: Any) -> None:
        from websockets.protocol import State

        self._protocol = protocol
        self._open = State.OPEN
        self._transport = protocol.transport
        self._conn = protocol.conn
        self._writable = protocol.writable
        _require(protocol, "close_sent")

    def send(self, head: bytes, tail: bytes, binary: bool = False) -> int:
        transport = self._transport
        # While the transport is paused (flow control), ASGI send queues behind it instead.
        # (A direct writer exists only after the handshake; a lost connection is closing.)
        if (self._conn.state is not self._open or self._protocol.close_sent
                or not self._writable.is_set() or transport.is_closing()):
            return NOT_OPEN
        transport.write(frame_header(len(head) + len(tail), binary) + head + tail)
        return transport.get_write_buffer_size()


def direct_frames_for(send: Any) -> DirectFrames | None:
    """A writer for the connection behind an ASGI ``send`` callable, if its server is known
    and this patch is on for it (``topics.adapters.registry``)."""
    protocol, server = protocol_of(send)
    if server is not None and not active("direct_frames", server):
        return None  # switched off, or the server's version is outside the window
    try:
        if server == DAPHNE:
            return _TwistedFrames(protocol)
        if server == UVICORN:
            return _AsyncioFrames(protocol)
    except (AttributeError, ImportError, TypeError):
        pass  # a server whose internals differ: use ASGI send
    _count_fallback(send)
    return None


def _count_fallback(send: Any) -> None:
    """A connection whose broadcasts go through ASGI send: counted, and logged once."""
    global _fallback_logged
    ws_counters.COUNTS.direct_frame_fallbacks += 1
    if not _fallback_logged:
        _fallback_logged = True
        logger.warning("direct frames unavailable for this server (ASGI send %r): broadcasts "
                       "go through ASGI send; dps_direct_frame_fallbacks_total counts them",
                       type(send).__name__)


def protocol_of(send: Any) -> tuple[Any, str | None]:
    """The daphne or uvicorn (websockets sans-I/O) protocol behind an ASGI ``send``, and its
    server's name; ``(None, None)`` for another server."""
    if isinstance(send, functools.partial) and send.args:
        # daphne passes functools.partial(server.handle_reply, protocol) as the ASGI send.
        try:
            from daphne.server import Server
            from daphne.ws_protocol import WebSocketProtocol
        except ImportError:
            return None, None
        server, protocol = getattr(send.func, "__self__", None), send.args[0]
        if isinstance(server, Server) and isinstance(protocol, WebSocketProtocol):
            return protocol, DAPHNE
        return None, None
    # uvicorn's default WebSocket protocol passes its bound ``send`` method.
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:
        return None, None
    protocol = getattr(send, "__self__", None)
    if isinstance(protocol, WebSocketsSansIOProtocol):
        return protocol, UVICORN
    return None, None
