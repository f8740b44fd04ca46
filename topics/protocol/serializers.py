"""The serializers a client may ask for with ``?vsn=``, and choosing one at connect time.

As in Phoenix, a connect request without ``vsn`` speaks V1 (``1.0.0``: clients older than the
V2 format, such as the Java/Android envelope clients, send none), and a version is matched as
a requirement ``~> X.0.0``: ``2.0.1`` and ``2.0.9-rc1`` are V2, ``2.1.0`` and ``2.0.0-rc1`` (a
pre-release *before* 2.0.0) are nothing. Anything that is not a semantic version is refused.
"""
from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import parse_qs

from topics.protocol import v1_json, v2_json
from topics.protocol.message import Message, Ref

DEFAULT_VSN = v1_json.VSN  # what a client that sends no vsn speaks (Phoenix's rule)
_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


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
    """The serializer for a connect request's ``vsn`` parameter (``1.0.0`` when absent), or
    None when the version is not supported and the connection must be refused."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    params = parse_qs(query_string, keep_blank_values=True)
    return serializer_for_vsn(params.get("vsn", [DEFAULT_VSN])[0])


def serializer_for_vsn(vsn: str) -> Serializer | None:
    """The serializer whose requirement ``~> X.0.0`` the version ``vsn`` meets, or None."""
    version = _SEMVER.fullmatch(vsn)
    if version is None:
        return None
    major, minor, patch, pre = version.group(1), version.group(2), version.group(3), version.group(4)
    if minor != "0" or (patch == "0" and pre):
        return None  # 2.1.0 is past ~> 2.0.0; 2.0.0-rc1 comes before 2.0.0
    return SERIALIZERS.get(f"{major}.0.0")
