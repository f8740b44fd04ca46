"""The Phoenix V2 JSON serializer: a frame is ``[join_ref, ref, topic, event, payload]``.

Pure encode/decode, plus the fastlane used for broadcasts: the publisher encodes the payload
once, each member keeps a prefix carrying its own join_ref, and rendering is concatenation.
"""
from __future__ import annotations

from topics.protocol.message import (
    MalformedFrame,
    Message,
    Ref,
    decode_json,
    dumps,
    message_from_fields,
    readable_fields,
)

BINARY = True  # binary pushes and broadcasts use topics.protocol.v2_binary
VSN = "2.0.0"
_EXPECTED = "expected a JSON array [join_ref, ref, topic, event, payload]"


def decode(text: str) -> Message:
    """The message in a text frame; ``MalformedFrame`` if it is not a V2 message."""
    value = decode_json(text)
    if not isinstance(value, list):
        raise MalformedFrame(_EXPECTED)
    if len(value) < 5:  # as Phoenix, ``[join_ref, ref, topic, event, payload | _]``
        padded = value[:3] + [None] * (3 - len(value[:3]))
        raise MalformedFrame(_EXPECTED, **readable_fields(*padded))
    return message_from_fields(*value[:5])


_HEARTBEAT_HEAD = '[null,"'
_HEARTBEAT_TAIL = '","phoenix","heartbeat",{}]'


def heartbeat_ref(text: str) -> str | None:
    """The ref of a heartbeat written as phoenix.js writes it,
    ``[null,"<ref>","phoenix","heartbeat",{}]``, read without decoding JSON (what an idle
    node does most); None for any other frame, which :func:`decode` then reads. Only a ref of
    ASCII letters and digits is taken here: it has nothing to unescape."""
    if text.startswith(_HEARTBEAT_HEAD) and text.endswith(_HEARTBEAT_TAIL):
        ref = text[len(_HEARTBEAT_HEAD):-len(_HEARTBEAT_TAIL)]
        if ref.isascii() and ref.isalnum():
            return ref
    return None


def encode(message: Message) -> str:
    """The text frame for a message."""
    return dumps([message.join_ref, message.ref, message.topic, message.event, message.payload])


def broadcast_prefix(join_ref: Ref, topic: str, ref: Ref = None) -> str:
    """The part of every broadcast frame that is the same for one join: ``[jr,null,"topic",``
    (a ``ref`` instead of null: a broadcast's position, for joins that asked for it)."""
    return "[" + dumps(join_ref) + "," + dumps(ref) + "," + dumps(topic) + ","


def broadcast_tail(event_json: str, payload_json: str) -> str:
    """The part of a broadcast frame after the join's prefix: the same for every member."""
    return event_json + "," + payload_json + "]"


def render_broadcast(prefix: str, event_json: str, payload_json: str) -> str:
    """A broadcast frame from a join's prefix and the already-encoded event and payload."""
    return prefix + broadcast_tail(event_json, payload_json)
