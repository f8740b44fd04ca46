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
import struct
from collections.abc import Callable
from typing import Any

_SHORT = struct.Struct("!BB").pack
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack
_FIN_TEXT = 0x81  # FIN + opcode 1 (text), no RSV bits: not compressed


def text_frame_header(size: int) -> bytes:
    """The header of an unmasked frame carrying ``size`` bytes as one text message."""
    if size < 126:
        return _SHORT(_FIN_TEXT, size)
    if size < 65536:
        return _MEDIUM(_FIN_TEXT, 126, size)
    return _LONG(_FIN_TEXT, 127, size)


class DirectFrames:
    """Writes text messages to one open connection, bypassing the server's WebSocket layer."""

    __slots__ = ("_write", "_is_open", "_buffered")

    def __init__(self, write: Callable[[bytes], None], is_open: Callable[[], bool],
                 buffered: Callable[[], int]) -> None:
        self._write = write
        self._is_open = is_open
        self._buffered = buffered

    def send_parts(self, head: bytes, tail: bytes) -> bool:
        """Write one text message, ``head + tail`` (UTF-8), now; False (nothing written) when
        the connection is not open or cannot take a write now, and ASGI ``send`` must decide."""
        if not self._is_open():
            return False
        self._write(text_frame_header(len(head) + len(tail)) + head + tail)
        return True

    def buffered_bytes(self) -> int:
        """Bytes written but not yet taken by the client's socket (a slow client's backlog)."""
        return self._buffered()


def direct_frames_for(send: Any) -> DirectFrames | None:
    """A writer for the connection behind an ASGI ``send`` callable, if its server is known."""
    for adapter in (_daphne, _uvicorn_sansio):
        try:
            writer = adapter(send)
        except (AttributeError, ImportError, TypeError):
            writer = None  # a server version whose internals differ: use ASGI send
        if writer is not None:
            return writer
    return None


def _daphne(send: Any) -> DirectFrames | None:
    # daphne passes functools.partial(server.handle_reply, protocol) as the ASGI send.
    if not isinstance(send, functools.partial) or not send.args:
        return None
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    server, protocol = getattr(send.func, "__self__", None), send.args[0]
    if not isinstance(server, Server) or not isinstance(protocol, WebSocketProtocol):
        return None
    transport = protocol.transport
    open_state = WebSocketProtocol.STATE_OPEN
    connections = server.connections

    def is_open() -> bool:
        return protocol.state == open_state and not connections.get(protocol, {}).get(
            "disconnected")

    def buffered() -> int:
        # Twisted's FileDescriptor: a list of pending chunks plus the partly written one.
        pending = getattr(transport, "_tempDataLen", 0)
        data_buffer = getattr(transport, "dataBuffer", b"")
        return pending + len(data_buffer) - getattr(transport, "offset", 0)

    return DirectFrames(_twisted_write(transport), is_open, buffered)


def _twisted_write(transport: Any) -> Callable[[bytes], None]:
    """Twisted's ``write`` only buffers: it registers the socket with the reactor, which
    sends on its next turn and unregisters it (two epoll_ctl calls and a callback per frame).
    On a plain TCP connection with nothing buffered, the frame goes to the socket at once and
    only what the kernel does not take is left to Twisted, in order."""
    from twisted.internet import tcp

    if type(transport) is not tcp.Server or transport.TLS:
        return transport.write
    sock = transport.socket
    buffered_write = transport.write

    def write(frame: bytes) -> None:
        if (transport._tempDataLen or transport.dataBuffer or transport.disconnecting
                or transport._writeDisconnected or not transport.connected):
            buffered_write(frame)
            return
        try:
            sent = sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return  # the connection is broken: Twisted's reader reports the loss
        if sent < len(frame):
            buffered_write(frame[sent:])

    return write


def _uvicorn_sansio(send: Any) -> DirectFrames | None:
    # uvicorn's default WebSocket protocol passes its bound ``send`` method.
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State

    protocol = getattr(send, "__self__", None)
    if not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    transport = protocol.transport
    conn = protocol.conn
    writable = protocol.writable
    open_state = State.OPEN

    def is_open() -> bool:
        # While the transport is paused (flow control), ASGI send queues behind it instead.
        return (protocol.handshake_complete and not protocol.close_sent
                and not protocol.disconnected and conn.state is open_state
                and writable.is_set() and not transport.is_closing())

    return DirectFrames(transport.write, is_open, transport.get_write_buffer_size)
