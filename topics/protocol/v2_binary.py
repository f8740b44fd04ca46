"""The Phoenix V2 binary frames: pushes from clients, replies and broadcasts to them.

Byte layouts (every length is one byte, so each field is at most 255 bytes of UTF-8):

- push (client → server), kind 0:
  ``<<0, len(join_ref), len(ref), len(topic), len(event), join_ref, ref, topic, event, data>>``
- reply (server → client), kind 1, the status where a push has its event:
  ``<<1, len(join_ref), len(ref), len(topic), len(status), join_ref, ref, topic, status, data>>``
- broadcast (server → client), kind 2, no refs: the frame is the same for every member:
  ``<<2, len(topic), len(event), topic, event, data>>``

phoenix.js sends a push whose payload is an ``ArrayBuffer`` as kind 0 and hands ``data`` of a
kind 2 frame to ``channel.on(event)`` as an ``ArrayBuffer``. Pure encode/decode, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

from topics.protocol.message import MalformedFrame, Message, Ref

PUSH = 0
REPLY = 1
BROADCAST = 2
MAX_FIELD_BYTES = 255
_PUSH_HEADER = 5  # kind + four lengths
_BROADCAST_HEADER = 3  # kind + two lengths


class InvalidBinaryFrame(MalformedFrame):
    """A binary frame that is not a push: its lengths lie, its kind is not one a client
    sends, or a field is not UTF-8. ``invalid_utf8`` tells the socket to close with 1007."""

    def __init__(self, reason: str, *, invalid_utf8: bool = False) -> None:
        super().__init__(reason)
        self.invalid_utf8 = invalid_utf8


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded kind 1 frame (only tests and clients decode these)."""

    join_ref: str
    ref: str
    topic: str
    status: str
    data: bytes


def is_binary_frame(frame: bytes) -> bool:
    """Whether ``frame`` uses the binary layouts (its first byte is a kind), as opposed to the
    JSON text DPS also accepts in a binary frame (which starts with ``[`` or ``{``)."""
    return bool(frame) and frame[0] in (PUSH, REPLY, BROADCAST)


def _fields(frame: bytes, header: int, count: int) -> tuple[list[str], bytes]:
    sizes = frame[header - count:header]
    if len(frame) < header or header + sum(sizes) > len(frame):
        raise InvalidBinaryFrame("binary frame is shorter than its header says")
    fields = []
    start = header
    for size in sizes:
        try:
            fields.append(frame[start:start + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidBinaryFrame("binary frame field is not UTF-8", invalid_utf8=True) from None
        start += size
    return fields, frame[start:]


def decode_push(frame: bytes) -> Message:
    """The message in a kind 0 frame; its payload is the ``bytes`` after the header.

    Empty refs are null, as phoenix.js encodes a missing join_ref as an empty string.
    """
    if not frame or frame[0] != PUSH:
        raise InvalidBinaryFrame("a client may only send binary pushes (kind 0)")
    (join_ref, ref, topic, event), data = _fields(frame, _PUSH_HEADER, 4)
    return Message(join_ref or None, ref or None, topic, event, data)


def decode_reply(frame: bytes) -> Reply:
    if not frame or frame[0] != REPLY:
        raise InvalidBinaryFrame("not a binary reply")
    (join_ref, ref, topic, status), data = _fields(frame, _PUSH_HEADER, 4)
    return Reply(join_ref, ref, topic, status, data)


def decode_broadcast(frame: bytes) -> tuple[str, str, bytes]:
    """``(topic, event, data)`` of a kind 2 frame."""
    if not frame or frame[0] != BROADCAST:
        raise InvalidBinaryFrame("not a binary broadcast")
    (topic, event), data = _fields(frame, _BROADCAST_HEADER, 2)
    return topic, event, data


def _field(value: Ref) -> bytes:
    encoded = b"" if value is None else str(value).encode()
    if len(encoded) > MAX_FIELD_BYTES:
        raise ValueError(f"a binary frame field is at most {MAX_FIELD_BYTES} bytes")
    return encoded


def _frame(kind: int, fields: tuple[Ref, ...], data: bytes) -> bytes:
    encoded = [_field(value) for value in fields]
    return bytes([kind, *map(len, encoded)]) + b"".join(encoded) + data


def encode_push(join_ref: Ref, ref: Ref, topic: str, event: str, data: bytes) -> bytes:
    return _frame(PUSH, (join_ref, ref, topic, event), data)


def encode_reply(join_ref: Ref, ref: Ref, topic: str, status: str, data: bytes) -> bytes:
    return _frame(REPLY, (join_ref, ref, topic, status), data)


def encode_broadcast(topic: str, event: str, data: bytes) -> bytes:
    """The broadcast frame every member of ``topic`` receives; ``ValueError`` when the topic or
    event is over 255 bytes (topics are at most 71; events are checked at publish time)."""
    return _frame(BROADCAST, (topic, event), data)

