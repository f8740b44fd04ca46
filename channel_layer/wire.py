"""What travels between nodes: msgpack envelopes, never pickle.

Every inbox entry is one msgpack array whose first item is its kind. A user's message is
encoded once by the sender (``encode_message``) and travels inside envelopes as opaque bytes:
the topic server forwards those bytes to each WS node without decoding them.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

logger = logging.getLogger("channel_layer.wire")

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


def ignore(envelope: list, *context: Any) -> None:
    """Handler for envelopes that only need to arrive (WAKE)."""


def dispatch(data: bytes, handlers: Mapping[int, Callable[..., None]], counters: Counter,
             *context: Any) -> None:
    """Decode one inbox entry and call the handler for its kind with ``context``.

    Bad input is counted and skipped, never fatal: a node must outlive any peer's bytes.
    """
    try:
        envelope = decode(data)
        handler = handlers.get(envelope[0])
        if handler is None:
            counters["unknown_envelopes"] += 1
            return
        handler(envelope, *context)
    except (MalformedEnvelope, ValueError, TypeError, IndexError) as exc:
        counters["malformed_envelopes"] += 1
        logger.warning("skipped a malformed inbox entry: %s", exc)
