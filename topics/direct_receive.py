"""Client frames read straight off the connection: the receive side of ``topics.direct_frames``.

Under daphne every client frame crosses autobahn's receive machinery (a debug log whose
arguments are formatted on every read, a frame-header object, a masker object, per-frame and
per-message callbacks and stats) and then daphne's queue and a wake-up of the consumer's task.
For the small frames a Phoenix client sends (heartbeats, joins, publishes) that was most of a
WS node's receive cost. A client-to-server frame is a header, a 4-byte mask and the payload
(RFC 6455 5.2), so a connection with a receiver cuts complete, simple frames out of each read
itself:

- only while autobahn holds nothing (no buffered bytes, no frame or fragmented message in
  progress) and the connection is open, so the two parsers never share a frame;
- only final text or binary frames, masked, without RSV bits (nothing compressed), of at most
  ``MAX_DIRECT_PAYLOAD`` bytes with the minimal length encoding, and text that is valid UTF-8.
  At the first frame that is anything else (a ping, a close, a fragment, invalid UTF-8, a
  frame cut by the read) the rest of the read goes to autobahn, which applies its own rules
  (and closes with 1007, 1009, 1002 as before).

Each frame goes to the receiver first, while nothing waits in daphne's queue (order), and the
receiver answers what needs no await (a heartbeat) at once; everything else takes daphne's own
``onMessage`` into its queue, exactly as autobahn would have delivered it. Connections of other
servers keep their server's path (:func:`receive_directly` returns False).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

try:  # websockets' C helper (installed with uvicorn's and the tests' websockets)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python equivalent
    def apply_mask(data: bytes, mask: bytes) -> bytes:
        size = len(data)
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        return (int.from_bytes(data, "big") ^ key).to_bytes(size, "big")

MAX_DIRECT_PAYLOAD = 65535  # larger frames (rare: a big publish) take autobahn's path
_FIN_TEXT, _FIN_BINARY = 0x81, 0x82
_MASKED = 0x80

# A receiver takes a text (str) or binary (bytes) message and returns whether it handled it.
Receiver = Callable[[str | bytes], bool]


def receive_directly(send: Any, receiver: Receiver) -> bool:
    """Hand the client frames of the connection behind ASGI ``send`` to ``receiver`` first;
    False when the server is not one this module knows (nothing changes then)."""
    if not isinstance(send, functools.partial) or not send.args:
        return False
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return False
    server, protocol = getattr(send.func, "__self__", None), send.args[0]
    if not isinstance(server, Server) or not isinstance(protocol, WebSocketProtocol):
        return False
    if not all(hasattr(protocol, name) for name in _READ_STATE):
        return False  # an autobahn or daphne whose internals differ: keep theirs
    _install(WebSocketProtocol)
    protocol._dps_receiver = receiver
    return True


def stop_receiving(send: Any) -> None:
    """Frames of this connection take the server's usual path again."""
    if isinstance(send, functools.partial) and send.args:
        send.args[0].__dict__.pop("_dps_receiver", None)


# What the fast path reads of autobahn's and daphne's protocol.
_READ_STATE = ("data", "current_frame", "inside_message", "state", "STATE_OPEN", "muted",
               "maxFramePayloadSize", "maxMessagePayloadSize", "application_queue",
               "last_ping", "onMessage")


@functools.cache
def _install(protocol_class: Any) -> None:
    original = protocol_class.dataReceived

    def data_received(self, data: bytes) -> None:
        receiver = self.__dict__.get("_dps_receiver")
        if (receiver is None or self.state != self.STATE_OPEN or self.data
                or self.current_frame is not None or self.inside_message):
            original(self, data)
            return
        rest = _take_frames(self, data, receiver)
        if rest:
            original(self, rest)

    protocol_class.dataReceived = data_received


def _payload_limit(protocol: Any) -> int:
    limit = MAX_DIRECT_PAYLOAD
    for setting in (protocol.maxFramePayloadSize, protocol.maxMessagePayloadSize):
        if setting and setting < limit:
            limit = setting
    return limit


def _take_frames(protocol: Any, data: bytes, receiver: Receiver) -> bytes:
    """Handle the complete simple frames at the start of ``data``; the bytes left for
    autobahn (from the first frame it must see)."""
    end_of_data = len(data)
    limit = _payload_limit(protocol)
    queue = protocol.application_queue
    i = 0
    while end_of_data - i >= 6:
        first, second = data[i], data[i + 1]
        if (first != _FIN_TEXT and first != _FIN_BINARY) or not second & _MASKED:
            break
        size = second & 0x7F
        start = i + 6
        if size == 126:
            if end_of_data - i < 8:
                break
            size = (data[i + 2] << 8) | data[i + 3]
            if size < 126:
                break  # not the minimal encoding: autobahn's protocol violation
            start = i + 8
        elif size == 127:
            break
        end = start + size
        if end > end_of_data or size > limit:
            break
        payload = apply_mask(data[start:end], data[start - 4:start])
        binary = first == _FIN_BINARY
        if binary:
            message: str | bytes = payload
        else:
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                break
        i = end
        # What daphne's onMessage does first: liveness for its auto-ping, and a muted
        # (closing) connection takes nothing more.
        protocol.last_ping = time.time()
        if protocol.muted:
            continue
        if queue.qsize() or not receiver(message):
            protocol.onMessage(payload, binary)
        if protocol.state != protocol.STATE_OPEN:
            break
    return data[i:]
