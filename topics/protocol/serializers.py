"""The serializers a client may ask for with ``?vsn=``, and choosing one at connect time."""
from __future__ import annotations

from typing import Protocol
from urllib.parse import parse_qs

from topics.protocol import v1_json, v2_json
from topics.protocol.message import Message, Ref

DEFAULT_VSN = v2_json.VSN


class Serializer(Protocol):
    """What the socket needs from a wire format (each serializer module provides it)."""

    VSN: str
    BINARY: bool  # whether binary pushes and broadcasts are framed (V2) or refused (V1)

    def decode(self, text: str) -> Message: ...

    def encode(self, message: Message) -> str: ...

    def heartbeat_ref(self, text: str) -> str | None:
        """A heartbeat's ref read without a decode, where the format allows it; None means
        "decode it" (any other frame, or a heartbeat written some other way)."""

    def broadcast_prefix(self, join_ref: Ref, topic: str, ref: Ref = None) -> str: ...

    def broadcast_tail(self, event_json: str, payload_json: str) -> str: ...

    def render_broadcast(self, prefix: str, event_json: str, payload_json: str) -> str: ...


SERIALIZERS: dict[str, Serializer] = {v1_json.VSN: v1_json, v2_json.VSN: v2_json}


def serializer_for_query_string(query_string: bytes | str) -> Serializer | None:
    """The serializer for a connect request's ``vsn`` parameter (``2.0.0`` when absent), or
    None when the version is not supported and the connection must be refused."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    params = parse_qs(query_string, keep_blank_values=True)
    vsn = params.get("vsn", [DEFAULT_VSN])[0]
    return SERIALIZERS.get(vsn)
