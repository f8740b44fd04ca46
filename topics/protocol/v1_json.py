"""The Phoenix V1 JSON serializer (``vsn=1.0.0``): a frame is an object
``{"topic", "event", "payload", "ref", "join_ref"}``.

Pure encode/decode plus the same fastlane as V2. Unlike Phoenix's own V1 serializer we keep
``join_ref`` in what we send, so a V1 client can tell a ``phx_close`` for a join it replaced
from one for its current join.
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

BINARY = False  # Phoenix's V1 serializer has no binary frames
VSN = "1.0.0"
_REQUIRED = ("topic", "event", "payload", "ref")
_EXPECTED = 'expected a JSON object {"topic", "event", "payload", "ref"[, "join_ref"]}'


def decode(text: str) -> Message:
    """The message in a text frame; ``MalformedFrame`` if it is not a V1 message."""
    value = decode_json(text)
    if not isinstance(value, dict):
        raise MalformedFrame(_EXPECTED)
    fields = readable_fields(value.get("join_ref"), value.get("ref"), value.get("topic"))
    if any(key not in value for key in _REQUIRED):
        raise MalformedFrame(_EXPECTED, **fields)
    return message_from_fields(value.get("join_ref"), value["ref"], value["topic"],
                               value["event"], value["payload"])


def encode(message: Message) -> str:
    """The text frame for a message."""
    return dumps({"join_ref": message.join_ref, "ref": message.ref, "topic": message.topic,
                  "event": message.event, "payload": message.payload})


def broadcast_prefix(join_ref: Ref, topic: str, ref: Ref = None) -> str:
    """The part of every broadcast frame that is the same for one join (``ref``: as V2)."""
    return ('{"join_ref":' + dumps(join_ref) + ',"ref":' + dumps(ref) + ',"topic":'
            + dumps(topic) + ",")


def broadcast_tail(event_json: str, payload_json: str) -> str:
    """The part of a broadcast frame after the join's prefix: the same for every member."""
    return '"event":' + event_json + ',"payload":' + payload_json + "}"


def render_broadcast(prefix: str, event_json: str, payload_json: str) -> str:
    """A broadcast frame from a join's prefix and the already-encoded event and payload."""
    return prefix + broadcast_tail(event_json, payload_json)


def heartbeat_ref(text: str) -> str | None:
    """V1 objects have no fixed key order to read a ref from without decoding: None (the
    heartbeat is decoded)."""
    return None
