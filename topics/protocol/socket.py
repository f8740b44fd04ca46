"""The Phoenix socket as a pure state machine: which topics one connection has joined, and
what each received frame means.

Frames go in, :mod:`actions <topics.protocol.actions>` come out; there is no I/O, clock or
framework here, so every rule of the protocol is testable without a server. The adapter
(``topics.transport.consumer``) executes the actions and reports back on the two-step ones.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from topics.protocol import v2_binary
from topics.protocol.actions import Action, Close, Publish, PublishBinary, SendFrame, Subscribe, Unsubscribe
from topics.protocol.message import MalformedFrame, Message, Ref, dumps, encode_event, is_encodable
from topics.protocol.serializers import Serializer
from topics.protocol.topic_names import INVALID_NAME, is_topics_topic, is_valid_site_topic, is_valid_topic

DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
DEFAULT_MAX_TOPICS = 100

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
# "Going away": the server ends the session and the client should reconnect. phoenix.js
# (all of 1.7.x, 1.8 up to 1.8.12) does not reconnect after 1000, so Phoenix closes a
# ``disconnect`` broadcast with 1001, and DPS does the same for it and for the idle timeout.
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

SOCKET_TOPIC = "phoenix"
UNMATCHED_TOPIC = "unmatched topic"
UNKNOWN_EVENT = "unknown event"
TOO_MANY_TOPICS = "too many topics"
INVALID_SITE_TOPIC = "invalid topic name"
BINARY_NOT_SUPPORTED = "binary payloads need vsn=2.0.0"
CHANNEL_CRASH = "channel_crash"  # phx_error's reason when a topic's handler raised
JOIN_CRASHED = "join crashed"  # Phoenix's answer to a join whose channel crashed in its join
_REF_MARK = "\x00ref\x00"  # stands for the ref in a reply template (never sent)


@dataclass(frozen=True, slots=True)
class _Join:
    join_ref: Ref
    # The broadcast frame up to the event, computed once per join so that rendering a
    # broadcast for this member is concatenation only (``prefix_bytes``: UTF-8, for frames
    # assembled from bytes).
    prefix: str
    prefix_bytes: bytes
    offsets: bool = False  # broadcasts carry their position as the frame's ref (recovery)


class PhoenixSocket:
    """One client connection's protocol state.

    Over 25 methods on purpose: one ``handle_*`` per protocol event and one small query per
    question the consumer asks, as Phoenix's ``socket.ex`` reads; each returns actions and none
    does I/O, so splitting them would only scatter the protocol's one state across classes.
    """

    def __init__(self, serializer: Serializer, *,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 max_topics: int = DEFAULT_MAX_TOPICS,
                 routes: Callable[[str], bool] = is_topics_topic,
                 client_events: Callable[[str], bool] = lambda topic: False) -> None:
        self.serializer = serializer
        self.routes = routes  # whether a topic is served at all (else "unmatched topic")
        # Whether a joined topic takes any client event as a broadcast (Phoenix's handle_in)
        # besides ``publish`` (else "unknown event").
        self.client_events = client_events
        self.max_frame_bytes = max_frame_bytes
        self.max_topics = max_topics
        self.closed = False
        self._joins: dict[str, _Join] = {}
        # Messages addressed to a join this socket has since replaced or closed: ignored, as
        # Phoenix ignores them (the client has raced a server close), and counted here.
        self.stale_messages = 0
        self._ok_templates: dict[str, tuple[Ref, str | None, str]] = {}

    @property
    def topics(self) -> frozenset[str]:
        """The topics this socket has joined (and been acknowledged on)."""
        return frozenset(self._joins)

    def join_ref_of(self, topic: str) -> Ref:
        """The join_ref of the current join of ``topic`` (None when not joined)."""
        join = self._joins.get(topic)
        return join.join_ref if join else None

    # --- frames in ----------------------------------------------------------------------

    def handle_frame(self, frame: str | bytes) -> list[Action]:
        """The actions for one received text (``str``) or binary (``bytes``) frame."""
        if self.closed:
            return []
        if isinstance(frame, bytes):
            return self._handle_binary(frame)
        if self._utf8_size_exceeds(frame):
            return self._close(CLOSE_TOO_BIG)
        try:
            message = self.serializer.decode(frame)
        except MalformedFrame as exc:
            return self._handle_malformed(exc)
        return self.handle_message(message)

    def handle_heartbeat_frame(self, frame: str) -> list[Action] | None:
        """The reply to a text frame that is a heartbeat; None for any other frame, which
        then goes through :meth:`handle_frame`. A heartbeat changes no state, so an adapter
        can answer it in its read callback, and the substring test keeps that cheap for
        every other frame."""
        if self.closed or "heartbeat" not in frame or self._utf8_size_exceeds(frame):
            return None
        ref = self.serializer.heartbeat_ref(frame)
        if ref is not None:
            return [self._ok(None, ref, SOCKET_TOPIC)]
        try:
            message = self.serializer.decode(frame)
        except MalformedFrame:
            return None
        if message.topic == SOCKET_TOPIC and message.event == "heartbeat":
            return self.handle_heartbeat(message)
        return None

    def handle_message(self, message: Message) -> list[Action]:
        """The actions for one decoded message."""
        if message.topic == SOCKET_TOPIC and message.event == "heartbeat":
            return self.handle_heartbeat(message)
        if message.event == "phx_join":
            return self.handle_join(message)
        if message.event == "phx_leave":
            return self.handle_leave(message)
        join = self._current_join(message)
        if join is None:
            return self._not_joined(message)
        if message.event == "publish":
            return self.handle_publish(message, join)
        if self.client_events(message.topic):
            return self.handle_client_event(message, join)
        return [self._error(join.join_ref, message.ref, message.topic, UNKNOWN_EVENT)]

    def handle_heartbeat(self, message: Message) -> list[Action]:
        # The same frame for every heartbeat but for its ref (an idle node's hot path).
        return [self._ok(message.join_ref, message.ref, message.topic)]

    def handle_join(self, message: Message) -> list[Action]:
        """Validate a join; the reply comes from :meth:`joined` once the adapter subscribed."""
        topic = message.topic
        if not self.routes(topic):
            return [self._unmatched(message.ref, topic)]
        if not is_topics_topic(topic):  # a site's own namespace
            if not is_valid_site_topic(topic):
                return [self._error(message.join_ref, message.ref, topic, INVALID_SITE_TOPIC)]
        elif not is_valid_topic(topic):
            # The original answers an invalid name with a bare string as the response.
            return [self._reply(message.join_ref, message.ref, topic, "error", INVALID_NAME)]
        if topic not in self._joins and len(self._joins) >= self.max_topics:
            return [self._error(message.join_ref, message.ref, topic, TOO_MANY_TOPICS)]
        return [Subscribe(topic, message.join_ref, message.ref, message.payload)]

    def joined(self, subscribe: Subscribe, response: dict | None = None,
               offsets: bool = False) -> list[Action]:
        """The adapter subscribed: record the join, acknowledge it (with ``response``), and
        close a join it replaced. With ``offsets`` the join's broadcasts carry a ref.

        The old join's prefix is dropped here, so nothing is rendered with the old join_ref
        afterwards.
        """
        topic, join_ref = subscribe.topic, subscribe.join_ref
        old = self._joins.get(topic)
        prefix = self.serializer.broadcast_prefix(join_ref, topic)
        self._joins[topic] = _Join(join_ref, prefix, prefix.encode(), offsets)
        actions: list[Action] = [self._reply(join_ref, subscribe.ref, topic, "ok",
                                             response or {})]
        if old is not None:
            # As in Phoenix, even when the client reused the join_ref: the old join is gone.
            actions.append(self._close_frame(old.join_ref, topic))
        return actions

    def subscribe_failed(self, subscribe: Subscribe, reason: str) -> list[Action]:
        """The adapter could not subscribe: refuse the join. A join it would have replaced is
        closed too, as in Phoenix, which closes the old channel before it runs the new join:
        the client gave that join up when it sent this one."""
        refusal = self._error(subscribe.join_ref, subscribe.ref, subscribe.topic, reason)
        old = self._joins.pop(subscribe.topic, None)
        if old is None:
            return [refusal]
        return [Unsubscribe(subscribe.topic), self._close_frame(old.join_ref, subscribe.topic),
                refusal]

    def join_crashed(self, subscribe: Subscribe) -> list[Action]:
        """The topic's handler crashed in its join: refuse it as Phoenix does."""
        return self.subscribe_failed(subscribe, JOIN_CRASHED)

    def handle_channel_crash(self, topic: str) -> list[Action]:
        """The topic's handler raised: the channel is gone, as a crashed Phoenix channel is.
        The member leaves the topic and gets ``phx_error`` (``channel_crash``), which makes
        phoenix.js fire ``onError`` and rejoin."""
        join = self._joins.pop(topic, None)
        if join is None or self.closed:
            return []
        error = Message(join.join_ref, join.join_ref, topic, "phx_error", {"reason": CHANNEL_CRASH})
        return [Unsubscribe(topic), self._frame(error)]

    def handle_leave(self, message: Message) -> list[Action]:
        """Leave a joined topic: unsubscribe first, so nothing arrives after the reply."""
        join = self._current_join(message)
        if join is None:
            if message.topic in self._joins:
                # A stale leave for a join since replaced, whose phx_close went out already.
                self.stale_messages += 1
                return []
            return [self._reply(message.join_ref, message.ref, message.topic, "ok", {})]
        del self._joins[message.topic]
        return [
            Unsubscribe(message.topic),
            self._reply(join.join_ref, message.ref, message.topic, "ok", {}),
            self._close_frame(join.join_ref, message.topic),
        ]

    def handle_publish(self, message: Message, join: _Join) -> list[Action]:
        """Validate a publish and encode its payload once for every member."""
        reason = publish_error(message.payload)
        if reason is not None:
            return [self._error(join.join_ref, message.ref, message.topic, reason)]
        event, payload = message.payload
        return self._publish(message, join, event, payload)

    def handle_client_event(self, message: Message, join: _Join) -> list[Action]:
        """Any other event on a topic that takes client events (``channel.push("new_msg",
        {...})``): a publish of that event and payload, under the same rules."""
        reason = event_error(message.event)
        if reason is None and not isinstance(message.payload, dict):
            reason = "payload must be a JSON object"
        if reason is not None:
            return [self._error(join.join_ref, message.ref, message.topic, reason)]
        return self._publish(message, join, message.event, message.payload)

    def _publish(self, message: Message, join: _Join, event: str, payload: dict) -> list[Action]:
        """Encode a valid publish's payload once for every member."""
        try:
            payload_json = dumps(payload)
        except RecursionError:
            reason = "payload is nested too deeply"
        except ValueError:  # a number that overflowed to infinity (1e400)
            reason = "payload numbers must be finite"
        else:
            return [Publish(message.topic, event, payload_json, join.join_ref, message.ref)]
        return [self._error(join.join_ref, message.ref, message.topic, reason)]

    def handle_binary_push(self, message: Message) -> list[Action]:
        """A V2 binary push is a publish: its event is the broadcast's event and its bytes are
        the payload, under the same rules for events as a JSON ``publish``."""
        join = self._current_join(message)
        if join is None:
            return self._not_joined(message)
        if not self.serializer.BINARY:
            return [self._error(join.join_ref, message.ref, message.topic, BINARY_NOT_SUPPORTED)]
        reason = event_error(message.event)
        if reason is not None:
            return [self._error(join.join_ref, message.ref, message.topic, reason)]
        return [PublishBinary(message.topic, message.event, message.payload, join.join_ref,
                              message.ref)]

    def published(self, publish: Publish | PublishBinary, response: Any = None) -> list[Action]:
        """The layer accepted the publish (or the topic's handler answered it): acknowledge.
        An empty reply is the same frame for every publish of a join but for its ref, so it
        is encoded once per join and the ref put in (a publisher's hot path: one small
        ``dumps`` instead of a whole frame's)."""
        if response:
            return [self._reply(publish.join_ref, publish.ref, publish.topic, "ok", response)]
        return [self._ok(publish.join_ref, publish.ref, publish.topic)]

    def _ok(self, join_ref: Ref, ref: Ref, topic: str) -> SendFrame:
        """An empty ok reply, from the template of ``topic`` and ``join_ref``."""
        template = self._ok_templates.get(topic)
        if template is None or template[0] != join_ref:
            template = self._ok_template(join_ref, topic)
        if template[1] is None:
            return self._reply(join_ref, ref, topic, "ok", {})
        return SendFrame(template[1] + dumps(ref) + template[2])

    def _ok_template(self, join_ref: Ref, topic: str) -> tuple[Ref, str | None, str]:
        """The ok reply of ``topic``'s join cut around its ref (``None`` for a serializer
        whose frame does not hold the ref as plain JSON once)."""
        frame = self._reply(join_ref, _REF_MARK, topic, "ok", {}).text
        marker = dumps(_REF_MARK)
        head, found, tail = frame.partition(marker)
        template = (join_ref, head, tail) if found and marker not in tail else \
            (join_ref, None, "")
        if len(self._ok_templates) >= self.max_topics:
            self._ok_templates.clear()  # left topics' templates: bounded, rebuilt on use
        self._ok_templates[topic] = template
        return template

    def publish_failed(self, publish: Publish | PublishBinary, reason: str) -> list[Action]:
        """The layer refused the publish: tell the publisher why; the join stays."""
        return [self._error(publish.join_ref, publish.ref, publish.topic, reason)]

    def handle_idle_timeout(self) -> list[Action]:
        """The client has been silent too long: close (the client may reconnect)."""
        return self._close(CLOSE_GOING_AWAY)

    def handle_server_disconnect(self) -> list[Action]:
        """The site ends this session (``topics.api.disconnect``): close with 1001, as Phoenix
        does, so that every phoenix.js version reconnects (and a revoked client is refused)."""
        return self._close(CLOSE_GOING_AWAY)

    def handle_disconnect(self) -> list[Action]:
        """The connection is gone: leave every topic."""
        self.closed = True
        actions: list[Action] = [Unsubscribe(topic) for topic in self._joins]
        self._joins.clear()
        return actions

    # --- broadcasts out -----------------------------------------------------------------

    def render_broadcast(self, topic: str, event: str, payload_json: str,
                         position: str | None = None) -> str | None:
        """The frame carrying a broadcast to this member, with its own join_ref (and, for a
        join that asked for offsets, the broadcast's ``position`` as its ref); None when the
        topic is no longer joined (nothing is delivered after a leave)."""
        join = self._joins.get(topic)
        if join is None or self.closed:
            return None
        prefix = join.prefix
        if join.offsets and position is not None:
            prefix = self.serializer.broadcast_prefix(join.join_ref, topic, position)
        return self.serializer.render_broadcast(prefix, encode_event(event), payload_json)

    def wants_offsets(self, topic: str) -> bool:
        """Whether this member's broadcasts on ``topic`` carry their position."""
        join = self._joins.get(topic)
        return join is not None and join.offsets

    def broadcast_prefix_bytes(self, topic: str) -> bytes | None:
        """This member's part of a broadcast frame on ``topic`` (the rest, the serializer's
        ``broadcast_tail``, is the same for every member); None when it is no longer joined."""
        join = self._joins.get(topic)
        if join is None or self.closed:
            return None
        return join.prefix_bytes

    # --- helpers ------------------------------------------------------------------------

    def _handle_binary(self, frame: bytes) -> list[Action]:
        if len(frame) > self.max_frame_bytes:
            return self._close(CLOSE_TOO_BIG)
        if v2_binary.is_binary_frame(frame):
            try:
                push = v2_binary.decode_push(frame)
            except v2_binary.InvalidBinaryFrame as exc:
                # Lengths that lie, or a reply or broadcast kind: no ref can be trusted.
                return self._close(CLOSE_INVALID_DATA if exc.invalid_utf8
                                   else CLOSE_UNSUPPORTED_DATA)
            return self.handle_binary_push(push)
        try:  # DPS also reads a JSON frame sent as binary
            text = frame.decode("utf-8")
        except UnicodeDecodeError:
            return self._close(CLOSE_INVALID_DATA)
        return self.handle_frame(text)

    def _handle_malformed(self, exc: MalformedFrame) -> list[Action]:
        if exc.ref is None:
            return self._close(CLOSE_UNSUPPORTED_DATA)  # nobody to address a reply to
        return [self._error(exc.join_ref, exc.ref, exc.topic or SOCKET_TOPIC, exc.reason)]

    def _utf8_size_exceeds(self, text: str) -> bool:
        # A character is 1 to 4 bytes: only encode when the character count cannot decide.
        limit = self.max_frame_bytes
        if len(text) > limit:
            return True
        if len(text) * 4 <= limit:
            return False
        return len(text.encode("utf-8", "surrogatepass")) > limit

    def _current_join(self, message: Message) -> _Join | None:
        """The join a message addresses. A null join_ref means the current join (simple and
        V1 clients send none); any other join_ref must be the current one."""
        join = self._joins.get(message.topic)
        if join is None or message.join_ref not in (None, join.join_ref):
            return None
        return join

    def _not_joined(self, message: Message) -> list[Action]:
        """A message for a topic this socket has not joined (``unmatched topic``), or for a
        join it has since replaced (ignored and counted, as Phoenix ignores it)."""
        if message.topic in self._joins:
            self.stale_messages += 1
            return []
        return [self._unmatched(message.ref, message.topic)]

    def _close(self, code: int) -> list[Action]:
        # Leave every topic before closing: the membership must go even if the close itself
        # fails or the connection dies on the way.
        actions: list[Action] = [Unsubscribe(topic) for topic in self._joins]
        self._joins.clear()
        self.closed = True
        return [*actions, Close(code)]

    def _reply(self, join_ref: Ref, ref: Ref, topic: str, status: str,
               response: Any) -> SendFrame:
        payload = {"status": status, "response": response}
        return self._frame(Message(join_ref, ref, topic, "phx_reply", payload))

    def _error(self, join_ref: Ref, ref: Ref, topic: str, reason: str) -> SendFrame:
        return self._reply(join_ref, ref, topic, "error", {"reason": reason})

    def _unmatched(self, ref: Ref, topic: str) -> SendFrame:
        return self._error(None, ref, topic, UNMATCHED_TOPIC)

    def _close_frame(self, join_ref: Ref, topic: str) -> SendFrame:
        return self._frame(Message(join_ref, join_ref, topic, "phx_close", {}))

    def _frame(self, message: Message) -> SendFrame:
        return SendFrame(self.serializer.encode(message))


def publish_error(payload: Any) -> str | None:
    """Why a ``publish`` payload is refused, or None if it is ``[event, object]``."""
    if not isinstance(payload, list) or len(payload) != 2:
        return "publish payload must be a 2-element array [event, payload]"
    event, body = payload
    if not isinstance(event, str):
        return "event must be a non-empty string"
    reason = event_error(event)
    if reason is None and not isinstance(body, dict):
        return "payload must be a JSON object"
    return reason


def event_error(event: str) -> str | None:
    """Why a client may not broadcast ``event`` (JSON or binary), or None."""
    if not event:
        return "event must be a non-empty string"
    if event.startswith("phx_"):
        return "event names starting with phx_ are reserved"
    if not is_encodable(event):
        return "event must be valid Unicode (it has a lone surrogate)"
    return None
