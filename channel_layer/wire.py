"""What travels between nodes: msgpack envelopes, never pickle.

Every inbox entry is one msgpack array whose first item is its kind. A user's message is
encoded once by the sender (``encode_message``) and travels inside envelopes as opaque bytes:
the topic server forwards those bytes to each WS node without decoding them.

A handler receives its envelope as a named type (``Publish``, ``Sync``, ...), one per kind,
decoded by :func:`dispatch`; a peer of an older version leaves trailing fields out and they get
their defaults. Senders still build the array (the hot paths encode it without a detour).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import msgpack

from channel_layer.clock import SYSTEM_CLOCK, Clock

logger = logging.getLogger("channel_layer.wire")
T = TypeVar("T")

# Envelope kinds. Keep the numbers stable: they are the wire format.
CHANNEL = 1         # [CHANNEL, channel, expires_at, message_bytes]          -> the channel's node
PUBLISH = 2         # [PUBLISH, group, expires_at, message_bytes(, origin, seq, identity)]
                    #   -> the group's owner; a WS node's publishes are numbered per owner
                    #   and carry their identity [origin, first owner, its seq]
                    #   (channel_layer.sequencing); origin and seq None: forwarded once
GROUP_DELIVER = 3   # [GROUP_DELIVER, group, expires_at, message_bytes(, [offset, epoch] | None,
                    #   identity)] -> a WS node; the position only for a group with history
MEMBER = 4          # [MEMBER, group, ws_node, boot, local_count]            -> the group's owner
HELLO = 5           # [HELLO, ws_node, boot]                                 -> every TS node
RESYNC = 6          # [RESYNC, ts_node, ts_boot]                             -> a WS node
SYNC = 7            # [SYNC, ws_node, boot, ts_node, {group: local_count},
                    #   {group: [[key, ref, meta], ...]}, ring, first_seq, previous_ring]:
                    #   counts, presence, the sender's ring (liveness.ring_id), the number of
                    #   its next publish to this server, and the ring it last moved from
                    #   (None: none since it started) -> a TS node
BYE = 8             # [BYE, ws_node, boot]                                   -> every TS node
WAKE = 9            # [WAKE]: ends a reader's blocking read when its process stops -> itself
JOIN = 10           # [JOIN, ws_node, boot, [[group, local_count, token(, options)], ...]]
                    #   -> an owner; options {"presence": [key, ref, meta],
                    #   "recover": [offset, epoch]} (group_join)
JOINED = 11         # [JOINED, [token | [token, response], ...](, {group: presence JSON})]:
                    #   the owner's answer, behind earlier deliveries -> WS; a response
                    #   answers a join with options (its "presence": the group whose state is here)
MEMBERSHIP = 12     # [MEMBERSHIP, op, group, channel, reply]: group_add/discard ("add" or
                    #   "discard") for a channel of the receiving node; answered on ``reply``
PLAIN_MEMBER = 13   # [PLAIN_MEMBER, group, channel, joined_at, capacity] (joined_at 0: leave)
                    #   a plain channel's membership, held by the group's owner -> the owner
FLUSH = 14          # [FLUSH, reply]: forget every group and queued message; answer on ``reply``
UNTRACK = 15        # [UNTRACK, ws_node, boot, [[group, ref], ...]]: presence leaves -> an owner
QUERY = 16          # [QUERY, what, group, argument, reply]: "presence" (argument None) or
                    #   "history" (argument: offset); answered on ``reply`` -> the owner
ACK = 17            # [ACK, ts_node, ts_boot, origin, through]: publishes of ``origin`` up to
                    #   ``through`` are fanned out and written -> the origin's WS node

RESERVED_KEY = "__asgi_channel__"


class MessageTooLarge(ValueError):
    """The encoded message is larger than the layer's ``max_message_bytes``."""


class MalformedEnvelope(ValueError):
    """An inbox entry that is not a DPS envelope (counted and skipped, never fatal)."""


_packer = msgpack.Packer(use_bin_type=True)


def encode_message(message: dict, max_bytes: int) -> bytes:
    """Encode a Channels message once, enforcing the size limit."""
    data = msgpack.packb(message, use_bin_type=True)
    if len(data) > max_bytes:
        raise MessageTooLarge(
            f"message is {len(data)} bytes encoded; the limit (max_message_bytes) is {max_bytes}"
        )
    return data


def decode_message(data: bytes) -> dict:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode(envelope: list | tuple) -> bytes:
    return msgpack.packb(envelope, use_bin_type=True)


def decode(data: bytes) -> list:
    try:
        envelope = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedEnvelope(f"undecodable inbox entry: {exc}") from None
    if not isinstance(envelope, list) or not envelope or not isinstance(envelope[0], int):
        raise MalformedEnvelope("inbox entry is not a DPS envelope")
    return envelope


def check_message(message: Any) -> None:
    """The spec's rules for a message dict (shared by send and group_send)."""
    if not isinstance(message, dict):
        raise TypeError("message must be a dict")
    if RESERVED_KEY in message:
        raise ValueError(f"message may not contain the reserved key {RESERVED_KEY!r}")


def decode_plain(data: bytes) -> tuple[float, bytes]:
    """A plain channel's list entry: ``[expires_at, message_bytes]``."""
    expires_at, message = msgpack.unpackb(data, raw=False)
    return expires_at, message


def ignore(envelope: Any, *context: Any) -> None:
    """Handler for envelopes that only need to arrive (WAKE)."""


# ------------------------------------------------------------------------- named envelopes
# One type per kind, decoded from the array that arrived (``Kind.decode(array)``). A field an
# older peer does not send yet has its default (they are trailing, in the order the wire grew);
# a field a newer peer adds beyond the known ones is ignored. Each field's type is checked, so
# bad input fails here, as a decoding error, and never inside a handler.
_NUMBER = (int, float)
_OPTIONAL_STR = (str, type(None))
_OPTIONAL_LIST = (list, type(None))
_NO_ENTRIES: Mapping = MappingProxyType({})  # the default of a map an older peer leaves out


def _decode(cls: type[T], envelope: list) -> T:
    fields = cls._fields
    values = envelope[1:1 + len(fields)]
    required = len(fields) - len(cls._field_defaults)
    if len(values) < required:
        raise MalformedEnvelope(f"{cls.__name__} has {len(values)} of its {required} fields")
    for name, value, kinds in zip(fields, values, cls.SHAPE, strict=False):
        if not isinstance(value, kinds):
            raise MalformedEnvelope(f"{cls.__name__}.{name} is a {type(value).__name__}")
    return cls._make(values + [cls._field_defaults[f] for f in fields[len(values):]])


class Channel(NamedTuple):
    channel: str
    expires_at: float
    message: bytes
    KIND = CHANNEL
    SHAPE = (str, _NUMBER, bytes)
    decode = classmethod(_decode)


class Publish(NamedTuple):
    group: str
    expires_at: float
    message: bytes
    # A WS node's publish is numbered (channel_layer.sequencing): its origin and number at
    # this owner, and its identity [origin, first owner, its seq] once re-sent. A process
    # without a node sends none of them; a forwarded publish has origin and seq None.
    origin: str | None = None
    seq: int | None = None
    identity: list | None = None
    numbered: bool = False  # it carried the numbering fields (set by decode)
    KIND = PUBLISH
    SHAPE = (str, _NUMBER, bytes, _OPTIONAL_STR, (int, type(None)), _OPTIONAL_LIST)

    @classmethod
    def decode(cls, envelope: list) -> Publish:
        publish = _decode(cls, envelope[:7])
        return publish._replace(numbered=len(envelope) > 4)

    @property
    def forwarded(self) -> bool:
        """Forwarded once by a server behind whose ring it arrived: never forwarded again."""
        return self.numbered and self.origin is None


class GroupDeliver(NamedTuple):
    group: str
    expires_at: float
    message: bytes
    position: list | None = None  # [offset, epoch], for a group with history
    identity: list | None = None  # a numbered publish's identity (duplicates are dropped)
    KIND = GROUP_DELIVER
    SHAPE = (str, _NUMBER, bytes, _OPTIONAL_LIST, _OPTIONAL_LIST)
    decode = classmethod(_decode)


class Member(NamedTuple):
    group: str
    ws_node: str
    boot: str
    count: int
    KIND = MEMBER
    SHAPE = (str, str, str, int)
    decode = classmethod(_decode)


class Hello(NamedTuple):
    ws_node: str
    boot: str
    KIND = HELLO
    SHAPE = (str, str)
    decode = classmethod(_decode)


class Resync(NamedTuple):
    ts_node: str
    ts_boot: str
    KIND = RESYNC
    SHAPE = (str, str)
    decode = classmethod(_decode)


class Sync(NamedTuple):
    ws_node: str
    boot: str
    ts_node: str
    counts: dict  # {group: local member count}
    presence: Mapping = _NO_ENTRIES  # {group: [[key, ref, meta], ...]}
    ring: str | None = None  # the sender's ring (liveness.ring_id); None: an older peer
    first_seq: int = 0  # the number of its next publish here (0: nothing to skip)
    previous_ring: str | None = None  # the ring it last moved from (None: none since start)
    KIND = SYNC
    SHAPE = (str, str, str, dict, dict, _OPTIONAL_STR, int, _OPTIONAL_STR)
    decode = classmethod(_decode)


class Bye(NamedTuple):
    ws_node: str
    boot: str
    KIND = BYE
    SHAPE = (str, str)
    decode = classmethod(_decode)


class Wake(NamedTuple):
    KIND = WAKE
    SHAPE = ()
    decode = classmethod(_decode)


class Join(NamedTuple):
    ws_node: str
    boot: str
    joins: list  # [[group, local_count, token(, options)], ...]
    KIND = JOIN
    SHAPE = (str, str, list)
    decode = classmethod(_decode)


class Joined(NamedTuple):
    answers: list  # [token | [token, response], ...]
    states: Mapping = _NO_ENTRIES  # {group: presence state JSON}
    KIND = JOINED
    SHAPE = (list, dict)
    decode = classmethod(_decode)


class MembershipChange(NamedTuple):
    op: str  # "add" or "discard"
    group: str
    channel: str
    reply: str
    KIND = MEMBERSHIP
    SHAPE = (str, str, str, str)
    decode = classmethod(_decode)


class PlainMember(NamedTuple):
    group: str
    channel: str
    joined_at: float  # 0: it left
    capacity: int
    KIND = PLAIN_MEMBER
    SHAPE = (str, str, _NUMBER, int)
    decode = classmethod(_decode)


class Flush(NamedTuple):
    reply: str
    KIND = FLUSH
    SHAPE = (str,)
    decode = classmethod(_decode)


class Untrack(NamedTuple):
    ws_node: str
    boot: str
    leaves: list  # [[group, ref], ...]
    KIND = UNTRACK
    SHAPE = (str, str, list)
    decode = classmethod(_decode)


class Query(NamedTuple):
    what: str  # "presence" or "history"
    group: str
    argument: object
    reply: str
    KIND = QUERY
    SHAPE = (str, str, object, str)
    decode = classmethod(_decode)


class Ack(NamedTuple):
    ts_node: str
    ts_boot: str
    origin: str
    through: int
    KIND = ACK
    SHAPE = (str, str, str, int)
    decode = classmethod(_decode)


ENVELOPES: dict[int, Any] = {kind.KIND: kind for kind in (
    Channel, Publish, GroupDeliver, Member, Hello, Resync, Sync, Bye, Wake, Join, Joined,
    MembershipChange, PlainMember, Flush, Untrack, Query, Ack)}


# ----------------------------------------------------------------------------- dispatch
class BugReports:
    """Tracebacks of handler errors: one per kind every ``interval`` seconds at most (a bug on
    a hot path must not flood the log), each saying how many it stood for."""

    def __init__(self, interval: float = 60.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (logged at, silenced since)

    def report(self, kind: str) -> bool:
        """Log the exception being handled, unless one of ``kind`` was logged less than
        ``interval`` ago; whether it was logged."""
        now = self.clock.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.interval:
            self._last[kind] = (last[0], last[1] + 1)
            return False
        self._last[kind] = (now, 0)
        logger.error("bug: the handler of %s envelopes raised (%d more since the last report)",
                     kind, last[1] if last else 0, exc_info=True)
        return True


handler_bugs = BugReports()


def dispatch(data: bytes, handlers: Mapping[int, Callable[..., None]], counters: Counter,
             *context: Any) -> None:
    """Decode one inbox entry and call the handler for its kind with the named envelope and
    ``context``.

    Bad input is counted (``malformed_envelopes``, ``unknown_envelopes``) and skipped, never
    fatal: a node must outlive any peer's bytes. An exception inside a handler is a bug here,
    not bad input: it is counted in ``envelope_handler_errors`` and logged with its traceback
    (:data:`handler_bugs`).
    """
    try:
        envelope = decode(data)
        handler = handlers.get(envelope[0])
        if handler is None:
            counters["unknown_envelopes"] += 1
            return
        named = ENVELOPES[envelope[0]].decode(envelope)
    except MalformedEnvelope as exc:
        counters["malformed_envelopes"] += 1
        logger.warning("skipped a malformed inbox entry: %s", exc)
        return
    try:
        handler(named, *context)
    except Exception:
        counters["envelope_handler_errors"] += 1
        handler_bugs.report(type(named).__name__)
