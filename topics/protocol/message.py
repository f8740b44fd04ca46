"""The decoded Phoenix message, the error for a frame that is not one, and the JSON rules.

Every serializer decodes a frame into a :class:`Message` and encodes replies and pushes from
the same fields, so the socket state machine never sees the wire format. The JSON helpers
live here so both serializers encode and decode exactly alike.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# A ref or join_ref is echoed back verbatim; phoenix.js sends strings, other clients integers.
Ref = str | int | None

# The longest event name whose JSON encoding is memoised (see ``encode_event``).
_CACHED_EVENT_CHARS = 128
# Python's own limit on converting digits to an int (the default of sys.set_int_max_str_digits).
_MAX_INT_DIGITS = 4300


@dataclass(frozen=True, slots=True)
class Message:
    """One Phoenix message: ``[join_ref, ref, topic, event, payload]`` in any serializer."""

    join_ref: Ref
    ref: Ref
    topic: str
    event: str
    payload: Any


class MalformedFrame(ValueError):
    """A frame that is not a Phoenix message.

    ``ref`` (and whatever else could be read) is kept so the socket can answer with an error
    reply the client can match; without a ref there is nobody to answer and the socket closes.
    """

    def __init__(self, reason: str, *, join_ref: Ref = None, ref: Ref = None,
                 topic: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.join_ref = join_ref
        self.ref = ref
        self.topic = topic


def is_ref(value: object) -> bool:
    """Whether ``value`` may be used as a ref: a string, an integer (not a bool) or null."""
    return value is None or isinstance(value, str) or (
        isinstance(value, int) and not isinstance(value, bool))


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; no other JSON parser does, so a payload with them
    # would break the subscribers' clients.
    raise ValueError(f"{name} is not JSON")


def _parse_int(digits: str) -> int | float:
    # Python refuses to convert more digits than ``sys.get_int_max_str_digits()`` (a
    # ValueError that would make the whole frame unreadable); such a number is out of any
    # client's range anyway, so it becomes infinity and ``dumps`` refuses it like 1e400.
    if len(digits) > _MAX_INT_DIGITS:
        return float("inf")
    return int(digits)


def loads(text: str) -> Any:
    """Strict JSON decoding. Raises ``ValueError`` for anything that is not JSON.

    A number too large for a float (``1e400``) decodes to infinity, which ``dumps`` refuses:
    the frame is readable, so its sender gets an error reply rather than a closed socket."""
    try:
        return _STRICT_JSON.decode(text)
    except RecursionError as exc:  # nesting deep enough to exhaust the stack is not a message
        raise ValueError("JSON nested too deeply") from exc


def dumps(value: Any) -> str:
    """Compact JSON. ASCII-only on purpose: a lone surrogate (legal as ``\\ud800`` in JSON
    input) would otherwise make the text frame unencodable for every subscriber. A
    non-finite float raises ``ValueError``: Python would write ``Infinity``, which no other
    JSON parser reads, and every member's client would fail on the frame."""
    return _COMPACT_JSON.encode(value)


# One encoder and one decoder for every call: json.dumps and json.loads with any non-default
# option build a new one each time, which costs more than encoding a ref or a topic name, and
# half of decoding a small frame (every frame, every reply, every join).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_parse_int)


def is_encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (JSON's ``"\\ud800"`` decodes to a lone
    surrogate, which cannot): names that travel unescaped must be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@lru_cache(maxsize=1024)
def _cached_event(event: str) -> str:
    return dumps(event)


def encode_event(event: str) -> str:
    """The JSON string for an event name, memoised for the short names topics reuse, so that
    rendering a broadcast for each member is string concatenation only."""
    if len(event) <= _CACHED_EVENT_CHARS:
        return _cached_event(event)
    return dumps(event)


def readable_fields(join_ref: object, ref: object, topic: object) -> dict[str, Any]:
    """Of a malformed frame's addressing fields, those that can be echoed in an error reply."""
    return {
        "join_ref": join_ref if is_ref(join_ref) else None,
        "ref": ref if is_ref(ref) else None,
        "topic": topic if isinstance(topic, str) else None,
    }


def message_from_fields(join_ref: object, ref: object, topic: object, event: object,
                        payload: Any) -> Message:
    """A :class:`Message` from decoded fields; ``MalformedFrame`` if a field has a wrong type."""
    if not (is_ref(join_ref) and is_ref(ref)):
        reason = "join_ref and ref must be strings, integers or null"
    elif not isinstance(topic, str) or not isinstance(event, str):
        reason = "topic and event must be strings"
    else:
        return Message(join_ref, ref, topic, event, payload)
    raise MalformedFrame(reason, **readable_fields(join_ref, ref, topic))


def decode_json(text: str) -> Any:
    """``loads`` for a whole frame: text that is not JSON is a frame nobody can be answered on."""
    try:
        return loads(text)
    except ValueError as exc:
        raise MalformedFrame(f"frame is not valid JSON: {exc}") from exc
