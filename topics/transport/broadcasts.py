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

from topics.protocol import v2_binary
from topics.protocol.message import dumps
from topics.transport import ws_counters

BROADCAST_TYPE = "phx.broadcast"
_BINARY_FRAME = "_dps_binary_frame"


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


def binary_as_json(data: bytes) -> str:
    """The JSON payload that stands for binary ``data`` where a client cannot take binary
    frames (V1 sockets, long-poll): ``{"binary": "<base64>"}``."""
    return dumps({"binary": base64.b64encode(data).decode("ascii")})
