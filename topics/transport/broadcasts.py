"""The group message that carries one broadcast to every member of a topic's group.

This is the one definition of its shape; the consumer, long-poll sessions and anything that
broadcasts from the server side (``topics.api.broadcast``) build it here::

    {"type": "phx.broadcast", "topic": "topics:NAME", "event": str, "payload": str | bytes,
     "sent_at": float}

- ``payload`` a ``str``: the JSON text of the payload object, encoded once by the publisher;
  each member prefixes it with its own join_ref (a V2 or V1 JSON text frame).
- ``payload`` ``bytes``: a binary payload (a V2 binary push, or a server-side broadcast of
  bytes); each V2 member gets the same binary broadcast frame
  ``<<2, len(topic), len(event), topic, event, payload>>`` (WebSocket opcode 2), built once per
  node. V1 members, which Phoenix gives no binary frames, get a JSON broadcast whose payload is
  ``{"binary": "<base64>"}`` (see :func:`binary_as_json`).

``sent_at`` is the publisher's clock, for the publish -> deliver latency (``topics.transport.ws_counters``).
msgpack keeps ``str`` and ``bytes`` apart on the wire (``use_bin_type``), so the type alone
says which; nothing here needs pickle.
"""
from __future__ import annotations

import base64
from typing import Any

from topics.protocol import Serializer, encode_event, v2_binary
from topics.protocol.message import dumps
from topics.transport import ws_counters

BROADCAST_TYPE = "phx.broadcast"
# What the first member of a node computes from a message and the others reuse: the layer hands
# one message object to all of a node's members, so each is built once per node (and serializer).
_BINARY_FRAME = "_dps_binary_frame"
_PAYLOAD_JSON = "_dps_payload_json"
_ENCODED_TAILS = "_dps_encoded_tails"


def broadcast_message(topic: str, event: str, payload: str | bytes) -> dict[str, Any]:
    """The group message for ``event`` on ``topic`` with a JSON text or binary payload."""
    return {"type": BROADCAST_TYPE, "topic": topic, "event": event, "payload": payload,
            ws_counters.SENT_AT: ws_counters.stamp()}


def is_binary(message: dict[str, Any]) -> bool:
    return isinstance(message["payload"], bytes)


def binary_frame(message: dict[str, Any]) -> bytes:
    """The binary broadcast frame of a bytes message, built by the first member that needs it
    and kept on the message: the layer hands one message object to all of a node's members."""
    frame = message.get(_BINARY_FRAME)
    if frame is None:
        frame = message[_BINARY_FRAME] = v2_binary.encode_broadcast(
            message["topic"], message["event"], message["payload"])
    return frame


def payload_json(message: dict[str, Any]) -> str:
    """The broadcast's payload as JSON text: a JSON payload as published; a binary one as
    :func:`binary_as_json` (for a member that takes no binary frames), encoded once per node."""
    payload = message["payload"]
    if not isinstance(payload, bytes):
        return payload
    text = message.get(_PAYLOAD_JSON)
    if text is None:
        text = message[_PAYLOAD_JSON] = binary_as_json(payload)
    return text


def encoded_tail(message: dict[str, Any], serializer: Serializer) -> bytes:
    """The UTF-8 part of a JSON broadcast frame after a member's join prefix (the serializer's
    ``broadcast_tail``): the same for every member with that serializer, so built once per node
    and serializer. A binary payload is in its base64 form here (a V1 member's frame)."""
    tails = message.get(_ENCODED_TAILS)
    if tails is None:
        tails = message[_ENCODED_TAILS] = {}
    tail = tails.get(serializer)
    if tail is None:
        tail = tails[serializer] = serializer.broadcast_tail(
            encode_event(message["event"]), payload_json(message)).encode()
    return tail


def binary_as_json(data: bytes) -> str:
    """The JSON payload that stands for binary ``data`` where a client cannot take binary
    frames (V1 sockets, long-poll): ``{"binary": "<base64>"}``."""
    return dumps({"binary": base64.b64encode(data).decode("ascii")})
