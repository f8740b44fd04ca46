"""Client frames read straight off the connection: the receive side of ``topics.adapters.direct_frames``.

Under daphne every client frame crosses autobahn's receive machinery (a debug log whose
arguments are formatted on every read, a frame-header object, a masker object, per-frame and
per-message callbacks and stats) and then daphne's queue and a wake-up of the consumer's task.
For the small frames a Phoenix client sends (heartbeats, joins, publishes) that was most of a
WS node's receive cost. A client-to-server frame is a header, a 4-byte mask and the payload
(RFC 6455 5.2), so a connection with a receiver cuts complete, simple frames out of each read
itself:

- only at a frame boundary of the server's parser (autobahn: no buffered bytes, no frame or
  fragmented message in progress; websockets: see :func:`_install_uvicorn`) while the
  connection is open, so the two parsers never share a frame;
- only final text or binary frames, masked, without RSV bits (nothing compressed), of at most
  ``MAX_DIRECT_PAYLOAD`` bytes with the minimal length encoding, and text that is valid UTF-8.
  At the first frame that is anything else (a ping, a close, a fragment, invalid UTF-8, a
  frame cut by the read) the rest of the read goes to autobahn, which applies its own rules
  (and closes with 1007, 1009, 1002 as before).

Each frame goes to the receiver first, while nothing waits in daphne's queue (order), and the
receiver answers what needs no await (a heartbeat) at once; everything else takes daphne's own
``onMessage`` into its queue, exactly as autobahn would have delivered it.

uvicorn (its default websockets sans-I/O protocol) gets the same, with the same rules: its
parser is a generator of Python steps per frame, and each message it queues pauses the
socket's reading until the application takes it (two ``epoll_ctl`` calls per frame). Frames
the receiver does not take go through uvicorn's own delivery. Connections of other servers
keep their server's path (:func:`receive_directly` returns False).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from topics.adapters.direct_frames import protocol_of
from topics.adapters.registry import DAPHNE, UVICORN, active
from topics.transport import ws_counters

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
    False when the server is not one this module knows, or the patch is off (nothing changes
    then)."""
    protocol, server = protocol_of(send)
    if server is None or not active("direct_receive", server):
        return False
    if not all(hasattr(protocol, name) for name in _READ_STATE[server]):
        ws_counters.COUNTS.direct_receive_fallbacks += 1
        return False  # a version whose internals differ: keep theirs
    _install(type(protocol), server)
    protocol._dps_receiver = receiver
    return True


def stop_receiving(send: Any) -> None:
    """Frames of this connection take the server's usual path again."""
    protocol, _server = protocol_of(send)
    if protocol is not None:
        protocol.__dict__.pop("_dps_receiver", None)


# What the fast path reads of each server's protocol.
_READ_STATE = {
    DAPHNE: ("data", "current_frame", "inside_message", "state", "STATE_OPEN", "muted",
             "maxFramePayloadSize", "maxMessagePayloadSize", "application_queue", "last_ping",
             "onMessage"),
    UVICORN: ("conn", "queue", "close_sent", "frames", "curr_msg_data_type", "read_paused",
              "send_receive_event_to_app", "transport"),
}


@functools.cache
def _install(protocol_class: Any, server: str) -> None:
    if server == UVICORN:
        _install_uvicorn(protocol_class)
    else:
        _install_daphne(protocol_class)


def _install_daphne(protocol_class: Any) -> None:
    original = protocol_class.dataReceived

    def data_received(self, data: bytes) -> None:
        receiver = self.__dict__.get("_dps_receiver")
        if (receiver is None or self.state != self.STATE_OPEN or self.data
                or self.current_frame is not None or self.inside_message):
            original(self, data)
            return
        queue = self.application_queue
        open_state = self.STATE_OPEN
        counts = ws_counters.COUNTS

        def accept(message: str | bytes, payload: bytes, binary: bool) -> bool:
            # What daphne's onMessage does first: liveness for its auto-ping, and a muted
            # (closing) connection takes nothing more.
            counts.direct_receive_frames += 1
            self.last_ping = time.time()
            if not self.muted and (queue.qsize() or not receiver(message)):
                self.onMessage(payload, binary)
            return self.state == open_state

        taken = _take_frames(data, _payload_limit(self.maxFramePayloadSize,
                                                  self.maxMessagePayloadSize), accept)
        if taken < len(data):
            original(self, data[taken:] if taken else data)

    protocol_class.dataReceived = data_received


def _install_uvicorn(protocol_class: Any) -> None:
    """uvicorn's websockets sans-I/O protocol: its parser is a generator over a buffer.

    websockets consumes a frame's header, extended length and mask as they arrive, so an empty
    buffer is no frame boundary: the parser may be waiting for a payload whose header it
    already read (read as new frames here, those bytes would be smuggled past it). It is at a
    boundary only while it waits in ``StreamReader.at_eof``, the first step of each frame (the
    innermost generator of its ``yield from`` chain), with nothing buffered and no fragmented
    message in progress. (With permessage-deflate, a frame
    without RSV1 is not compressed: the extension passes it on.)
    """
    from websockets.protocol import State
    from websockets.streams import StreamReader

    at_frame_boundary = StreamReader.at_eof.__code__
    original = protocol_class.data_received

    def data_received(self, data: bytes) -> None:
        receiver = self.__dict__.get("_dps_receiver")
        conn = self.conn
        if (receiver is None or conn.state is not State.OPEN or conn.reader.buffer
                or conn.expect_continuation_frame or self.frames or conn.parser_exc
                or _innermost(conn.parser).gi_code is not at_frame_boundary):
            original(self, data)
            return
        queue = self.queue
        counts = ws_counters.COUNTS

        def accept(message: str | bytes, payload: bytes, binary: bool) -> bool:
            if self.close_sent:
                return True  # past websocket.close: uvicorn discards what arrives
            counts.direct_receive_frames += 1
            waiting = queue.qsize()
            if waiting or not receiver(message):
                if not waiting:
                    # The application has nothing queued: this one message goes in without
                    # pausing the socket (uvicorn pauses after every message, resuming when
                    # the application takes it: two epoll_ctl calls per frame). A second
                    # message before the application took the first takes uvicorn's own
                    # delivery below, which pauses reading as before.
                    queue.put_nowait({"type": "websocket.receive",
                                      ("bytes" if binary else "text"): message})
                else:
                    self.curr_msg_data_type = "bytes" if binary else "text"
                    self.frames = [payload]
                    self.send_receive_event_to_app()
            return conn.state is State.OPEN and not self.read_paused

        taken = _take_frames(data, _payload_limit(conn.max_message_size), accept)
        if taken < len(data):
            original(self, data[taken:] if taken else data)

    protocol_class.data_received = data_received


def _innermost(generator: Any) -> Any:
    """The generator a chain of ``yield from`` is suspended in (websockets' parser: the
    protocol's ``parse``, the base class's ``parse``, then a step of the frame)."""
    while generator.gi_yieldfrom is not None:
        generator = generator.gi_yieldfrom
    return generator


def _payload_limit(*settings: int | None) -> int:
    limit = MAX_DIRECT_PAYLOAD
    for setting in settings:
        if setting and setting < limit:
            limit = setting
    return limit


def _take_frames(data: bytes, limit: int, accept: Callable[[str | bytes, bytes, bool], bool]
                 ) -> int:
    """Hand each complete simple frame at the start of ``data`` to ``accept(message, payload,
    binary)``, which returns whether the connection still reads; how many bytes were taken
    (the rest, from the first frame the server must see, goes to the server's parser)."""
    end_of_data = len(data)
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
                break  # not the minimal encoding: the server's protocol violation
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
        if not accept(message, payload, binary):
            break
    return i
