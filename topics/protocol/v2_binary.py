"""Recognising Phoenix V2 binary pushes, which DPS does not carry.

phoenix.js sends a push whose payload is an ``ArrayBuffer`` as a binary frame:
``<<0, len(join_ref), len(ref), len(topic), len(event), join_ref, ref, topic, event, data>>``.
DPS relays JSON only, but reading the header lets the socket answer such a push with an error
reply the client can match, instead of dropping the connection.
"""
from __future__ import annotations

from .message import Message

_PUSH = 0
_HEADER = 5


def read_push_header(frame: bytes) -> Message | None:
    """The addressing of a binary push (payload ``None``), or None if ``frame`` is not one."""
    if len(frame) < _HEADER or frame[0] != _PUSH:
        return None
    sizes = frame[1:_HEADER]
    if _HEADER + sum(sizes) > len(frame):
        return None
    fields = []
    start = _HEADER
    for size in sizes:
        try:
            fields.append(frame[start:start + size].decode("utf-8"))
        except UnicodeDecodeError:
            return None
        start += size
    join_ref, ref, topic, event = fields
    return Message(join_ref or None, ref or None, topic, event, None)
