"""What the socket state machine asks its adapter to do.

The adapter executes a list of actions in order. ``Subscribe`` and ``Publish`` are the first
half of a two-step exchange: once the adapter has done the I/O it reports back to the socket
(``joined`` / ``subscribe_failed``, ``published`` / ``publish_failed``), which returns the reply
to send. That is how a join is acknowledged only after the subscription exists, and a publish
only after the layer took it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from topics.protocol.message import Ref
from topics.protocol.topic_names import group_for_topic


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send ``text`` to the client as one text frame."""

    text: str


class _TopicAction:
    """An action on one topic, which the adapter addresses by the topic's Channels group."""

    __slots__ = ()
    topic: str

    @property
    def group(self) -> str:
        return group_for_topic(self.topic)


@dataclass(frozen=True, slots=True)
class Subscribe(_TopicAction):
    """Add this socket to the topic's group, then report back with ``socket.joined(self)``.
    ``payload`` is the join's (a recover request may be in it)."""

    topic: str
    join_ref: Ref
    ref: Ref
    # The join's payload, for the topic's handler; not part of what the action *is*.
    payload: Any = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Unsubscribe(_TopicAction):
    """Remove this socket from the topic's group."""

    topic: str


@dataclass(frozen=True, slots=True)
class Publish(_TopicAction):
    """Send ``event`` with the already-encoded ``payload_json`` to every member of the topic,
    then report back with ``socket.published(self)``."""

    topic: str
    event: str
    payload_json: str
    join_ref: Ref
    ref: Ref


@dataclass(frozen=True, slots=True)
class PublishBinary(_TopicAction):
    """Send ``event`` with the bytes ``data`` (a V2 binary push) to every member of the topic,
    then report back with ``socket.published(self)``; members get a binary broadcast frame."""

    topic: str
    event: str
    data: bytes
    join_ref: Ref
    ref: Ref


@dataclass(frozen=True, slots=True)
class Close:
    """Close the WebSocket with ``code``; the socket ignores every later frame."""

    code: int


Action = SendFrame | Subscribe | Unsubscribe | Publish | PublishBinary | Close
