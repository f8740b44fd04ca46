"""The Phoenix socket over a WebSocket (or a long-poll session): the coordinator.

:class:`PhoenixSocketConsumer` feeds what the client sends to the pure socket state machine
(``topics.protocol``) and executes the actions it returns against the channel layer; every
protocol rule lives in the protocol package. The rest is delegated, each part testable alone:

- ``topics.transport.lean_consumer``: the receive loop (no task per frame);
- ``topics.transport.admission``: the connect hook and the limits, refusal or admission;
- ``topics.transport.delivery``: everything sent to the client (fastlane broadcasts, the
  ordered sender, direct frames, slow clients);
- ``topics.hooks.handlers``: the site's topic handlers (join, handle_in, leave).

What it keeps: the join (handler, presence, recovery) and the publish (rate limit, payload size,
handler, ``group_send``), the disconnect, the heartbeat answered in the server's read callback,
and the idle timeout. The group message it publishes is ``topics.transport.broadcasts``'s.

A handler that crashes (``topics.hooks.handlers.Crashed``) crashes that join's channel, as in
Phoenix: a join is refused with ``join crashed``; a crash later leaves the topic and sends
``phx_error`` (phoenix.js rejoins). Each is counted (``channel_crashes``) and logged with its
traceback, at most one line per handler method each ``CRASH_LOG_INTERVAL`` seconds.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.exceptions import ChannelFull, StopConsumer
from django.conf import settings

from channel_layer.runtime import POSITION_KEY
from topics.adapters.direct_frames import direct_frames_for
from topics.adapters.direct_receive import receive_directly, stop_receiving
from topics.hooks import limits
from topics.hooks.handlers import BoundHandler, Crashed, Refused, Reply, SocketContext, topic_routes
from topics.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_TOPICS,
    Action,
    Close,
    PhoenixSocket,
    Publish,
    PublishBinary,
    SendFrame,
    Subscribe,
    Unsubscribe,
    group_for_topic,
    serializer_for_query_string,
)
from topics.transport import delivery, presence_tracking, ws_counters
from topics.transport.admission import admit, leave_group, release
from topics.transport.broadcasts import BROADCAST_TYPE, broadcast_message
from topics.transport.delivery import MemberDelivery, presence_broadcast
from topics.transport.handshake import accept_message, refuse
from topics.transport.idle_timers import IdleTimer, idle_timers
from topics.transport.lean_consumer import LeanAsyncConsumer, handler_of
from topics.transport.log_limits import LineLimiter, held_back

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 60.0
# What topics.api.disconnect sends to an identity's group: close that identity's sockets.
DISCONNECT_TYPE = "dps.disconnect"
# What topics.api.presence_update sends there: re-track that identity's presence on a topic.
PRESENCE_UPDATE_TYPE = "dps.presence_update"
CRASH_LOG_INTERVAL = 10.0  # seconds: at most one crash traceback per handler method in this time
_CRASH_LINES = LineLimiter(CRASH_LOG_INTERVAL)
# An owner that does not answer fails the update of every socket tracked there: one line a while
# for all of them (keyed by nothing that grows, such as the topic).
_PRESENCE_UPDATE_LINES = LineLimiter(CRASH_LOG_INTERVAL)
# Counted by member delivery; the node's report reads it here.
SENDS_AFTER_CLOSE = delivery.SENDS_AFTER_CLOSE
UNAVAILABLE = "unavailable"


def _failure_reason(operation: str, exc: Exception) -> str:
    # The exception's type says what went wrong; its text may name internal addresses.
    if isinstance(exc, ChannelFull):
        return f"{operation} failed: the topic is over capacity"
    if isinstance(exc, ConnectionError):
        # The topic's owner cannot be reached (down, paused, partitioned, its queue full):
        # nothing was published or joined; the client may retry (README, delivery guarantees).
        return UNAVAILABLE
    return f"{operation} failed: {type(exc).__name__}"


def _channel_crashed(crash: Crashed, topic: str) -> None:
    ws_counters.COUNTS.channel_crashes += 1
    quiet = _CRASH_LINES.admit(crash.handler)
    if quiet is not None:
        detail = f" ({crash.detail})" if crash.detail else ""
        logger.error("%s crashed on %s%s%s", crash.handler, topic, detail, held_back(quiet),
                     exc_info=crash.error)


class PhoenixSocketConsumer(LeanAsyncConsumer):
    """One client connection speaking Phoenix Channels over ``/socket/websocket``."""

    socket: PhoenixSocket | None = None
    # Who the connect hook said this is (None until admitted), and each joined topic's handler
    # where it has something to run (the seed's has nothing: no entry, no cost).
    context: SocketContext | None = None
    _handlers: dict[str, BoundHandler]
    _delivery: MemberDelivery | None = None
    _publish_gate: limits.PublishGate | None = None
    _idle_timer: IdleTimer | None = None
    _idle_close: asyncio.Task | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if self._delivery is None:
            await self.base_send(message)
        else:
            await self._delivery.send(message)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Broadcasts wait while a message is handled (a join or publish awaiting the layer),
        # so the handler's reply goes out first (the publisher's reply precedes its copy).
        held = self._delivery
        if held is not None:
            held.hold()
        try:
            await handler_of(self, message)(message)
        except (StopConsumer, asyncio.CancelledError):
            raise
        except Exception:
            # A consumer that dies must not leave its memberships behind for group_expiry.
            await self._leave_everything()
            raise
        finally:
            if held is not None:
                held.release()

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self._loop = asyncio.get_running_loop()
        # Everything sent from here on goes through it (the handshake's refusal excepted).
        self._delivery = out = MemberDelivery(
            self.base_send,
            max_pending_frames=int(getattr(settings, "DPS_MAX_PENDING_FRAMES",
                                           delivery.DEFAULT_MAX_PENDING_FRAMES)),
            max_send_buffer=int(getattr(settings, "DPS_MAX_SEND_BUFFER_BYTES",
                                        delivery.DEFAULT_MAX_SEND_BUFFER_BYTES)),
            dispatch=self.dispatch, on_slow_client=self._close_slow_client)
        serializer = serializer_for_query_string(self.scope.get("query_string", b""))
        if serializer is None:
            await refuse(self.scope, self.base_send, 403, "unsupported vsn")
            return
        self.context = await admit(self.scope, self.base_send, self.channel_layer,
                                   self.channel_name)
        if self.context is None:
            return
        self._routes = topic_routes()
        self._handlers = {}
        self._tracks: dict[str, list] = {}  # topic -> this socket's presence track there
        self.socket = PhoenixSocket(
            serializer,
            max_frame_bytes=getattr(settings, "DPS_MAX_FRAME_BYTES", DEFAULT_MAX_FRAME_BYTES),
            max_topics=getattr(settings, "DPS_MAX_TOPICS_PER_SOCKET", DEFAULT_MAX_TOPICS),
            routes=self._routes.routes,
            client_events=self._routes.client_events,
        )
        self._presence_key = presence_tracking.new_socket_key()
        self._publish_gate = limits.publish_gate(self.context.identity, self._loop.time())
        self._max_payload_bytes = limits.max_payload_bytes()
        await self.send(accept_message(self.scope))
        out.socket = self.socket
        add_fastlane = getattr(self.channel_layer, "add_fastlane", None)
        if add_fastlane is not None:
            # A long-poll session's connection is in memory: nothing to write frames to.
            if (getattr(settings, "DPS_DIRECT_FRAMES", True)
                    and self.scope.get("dps.transport") != "longpoll"):
                out.direct = direct_frames_for(self.base_send)
                if out.direct is not None:
                    receive_directly(self.base_send, self._receive_now)
            add_fastlane(self.channel_name, out.fastlane)
        self._start_idle_timer()

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self.socket is None:
            return
        self._last_received = self._loop.time()
        frame = message.get("text")
        if frame is None:
            frame = message.get("bytes") or b""
        await self._execute(self.socket.handle_frame(frame))

    def _receive_now(self, frame: str | bytes) -> bool:
        """A client frame handed over in the server's read callback
        (``topics.adapters.direct_receive``) with nothing of this connection ahead of it: a
        heartbeat is answered here, with no wake-up of this consumer (an idle node's main
        cost). Any other frame, or any frame while this consumer is handling one, goes the
        usual way, through ASGI receive (False).
        """
        socket, out = self.socket, self._delivery
        if out.busy or self.taken_from_client or socket is None or isinstance(frame, bytes):
            return False
        actions = socket.handle_heartbeat_frame(frame)
        if actions is None:
            return False
        # A heartbeat changes no state: if its reply cannot be written here, the usual path
        # answers it instead.
        for action in actions:
            if not (isinstance(action, SendFrame) and out.write_direct(b"", action.text.encode())):
                return False
        self._last_received = self._loop.time()
        return True

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self._delivery is not None:
            self._delivery.connection_done = True
        await self._leave_everything()
        raise StopConsumer()

    async def _leave_everything(self) -> None:
        if self._idle_timer is not None:  # it would keep the consumer alive for nothing
            self._idle_timer.cancel()
            self._idle_timer = None
        remove_fastlane = getattr(self.channel_layer, "remove_fastlane", None)
        if remove_fastlane is not None:
            remove_fastlane(self.channel_name)
        stop_receiving(self.base_send)
        if self.socket is not None:
            await self._execute(self.socket.handle_disconnect())
        context, self.context = self.context, None
        if context is not None:
            await release(context, self.channel_layer, self.channel_name)

    async def dps_disconnect(self, message: dict[str, Any]) -> None:
        """``topics.api.disconnect`` of this socket's identity: close."""
        if self.socket is not None:
            await self._execute(self.socket.handle_server_disconnect())

    async def phx_broadcast(self, message: dict[str, Any]) -> None:
        """A publish on a topic this socket joined, through the layer's queue (any layer)."""
        if self._delivery is not None:
            self._delivery.deliver(message)

    async def presence_diff(self, message: dict[str, Any]) -> None:
        if self._delivery is not None:
            self._delivery.deliver(presence_broadcast(message))

    presence_state = presence_diff

    async def _close_slow_client(self, unsubscribes: list[Action]) -> None:
        await self._execute(unsubscribes)
        await self._leave_everything()
        await self._delivery.send_to_client({"type": "websocket.close",
                                             "code": delivery.CLOSE_TRY_AGAIN_LATER})

    async def _execute(self, actions: list[Action]) -> None:
        socket = self.socket
        for action in actions:
            if isinstance(action, SendFrame):
                await self._delivery.send_text(action.text)
            elif isinstance(action, Subscribe):
                await self._execute(await self._subscribe(socket, action))
            elif isinstance(action, (Publish, PublishBinary)):
                await self._execute(await self._publish(socket, action))
            elif isinstance(action, Unsubscribe):
                await self._unsubscribe(action)
            elif isinstance(action, Close):
                await self.send({"type": "websocket.close", "code": action.code})

    async def _subscribe(self, socket: PhoenixSocket, action: Subscribe) -> list[Action]:
        handler = self._routes.bind(action.topic)
        response = None
        if handler is not None and handler.join is not None:
            outcome = await handler.run_join(self.context, action.topic, action.payload)
            if isinstance(outcome, Crashed):
                _channel_crashed(outcome, action.topic)
                return socket.join_crashed(action)
            if isinstance(outcome, Refused):
                return socket.subscribe_failed(action, outcome.reason)
            response = outcome.response
        options = self._join_options(action)
        try:
            if options is None:
                await self.channel_layer.group_add(action.group, self.channel_name)
            else:
                answer = await self.channel_layer.group_join(action.group, self.channel_name,
                                                             options)
        except Exception as exc:
            logger.warning("join of %s failed: %s", action.topic, type(exc).__name__)
            ws_counters.COUNTS.join_errors += 1
            return socket.subscribe_failed(action, _failure_reason("join", exc))
        ws_counters.COUNTS.joins += 1
        await self._run_leave(action.topic)  # of the join this one replaced, if any
        if handler is not None and not handler.passthrough:
            self._handlers[action.topic] = handler
        track = (options or {}).get("presence")
        if track is not None:
            self._tracks[action.topic] = track
        if options is None:
            return socket.joined(action, response)
        return self._joined_with(socket, action, answer, response)

    def _join_options(self, action: Subscribe) -> dict[str, Any] | None:
        """What the join asks the owner (presence, recovery); None: a plain group_add."""
        layer = self.channel_layer
        if not hasattr(layer, "group_join"):
            return None
        options: dict[str, Any] = {}
        if presence_tracking.tracks_presence(action.topic):
            options["presence"] = presence_tracking.track(
                self.scope, self._presence_key, action.payload, self.context.identity.user_id)
        if layer.has_history(action.group):
            recover = presence_tracking.recover_request(action.payload)
            if recover is not None:
                options["recover"] = recover
        elif not options:
            return None
        return options

    def _joined_with(self, socket: PhoenixSocket, action: Subscribe, answer: dict[str, Any],
                     response: Any = None) -> list[Action]:
        """The join reply (the handler's response, with the topic's position), then the
        presence state, then every recovered broadcast in order; live broadcasts wait behind
        them (``MemberDelivery.hold_first``)."""
        history = answer.get("history")
        if history is not None:
            response = {**(response if isinstance(response, dict) else {}),
                        "recovered": history["recovered"], "position": history["position"]}
        offsets = history is not None and presence_tracking.wants_offsets(action.payload)
        actions = socket.joined(action, response, offsets)
        if "presence" in answer:
            actions.append(SendFrame(socket.render_broadcast(
                action.topic, "presence_state", answer["presence"])))
        if history is not None and history["messages"]:
            # Delivered like live broadcasts (binary, V1, offsets), after this join's frames
            # and ahead of the live ones held meanwhile.
            epoch = history["position"]["epoch"]
            recovered = [{**message, POSITION_KEY: [offset, epoch]}
                         for offset, message in history["messages"]
                         if message.get("type") == BROADCAST_TYPE]
            self._delivery.hold_first(recovered)
        return actions

    async def _publish(self, socket: PhoenixSocket,
                       action: Publish | PublishBinary) -> list[Action]:
        gate = self._publish_gate
        if gate is not None and not gate(self._loop.time()):
            return socket.publish_failed(action, limits.RATE_LIMITED)
        payload = action.data if isinstance(action, PublishBinary) else action.payload_json
        too_large = limits.payload_too_large(payload, self._max_payload_bytes)
        if too_large is not None:
            return socket.publish_failed(action, too_large)
        event = action.event
        handler = self._handlers.get(action.topic)
        if handler is not None and handler.handle_in is not None:
            outcome = await handler.run_handle_in(self.context, event, payload)
            if isinstance(outcome, Crashed):
                _channel_crashed(outcome, action.topic)
                return socket.handle_channel_crash(action.topic)
            if isinstance(outcome, Refused):
                return socket.publish_failed(action, outcome.reason)
            if isinstance(outcome, Reply):
                return socket.published(action, outcome.response)
            event, payload = outcome.event, outcome.payload
        try:
            await self.channel_layer.group_send(
                action.group, broadcast_message(action.topic, event, payload))
        except Exception as exc:
            logger.warning("publish to %s failed: %s", action.topic, type(exc).__name__)
            ws_counters.COUNTS.publish_errors += 1
            return socket.publish_failed(action, _failure_reason("publish", exc))
        ws_counters.COUNTS.publishes += 1
        return socket.published(action)

    async def _unsubscribe(self, action: Unsubscribe) -> None:
        await leave_group(self.channel_layer, action.group, self.channel_name, action.topic)
        self._tracks.pop(action.topic, None)
        await self._run_leave(action.topic)

    async def _run_leave(self, topic: str) -> None:
        handler = self._handlers.pop(topic, None)
        if handler is not None:
            crash = await handler.run_leave(self.context, topic)
            if crash is not None:  # the channel is gone already: nothing more to tell the client
                _channel_crashed(crash, topic)

    async def dps_presence_update(self, message: dict[str, Any]) -> None:
        """``topics.api.presence_update`` of this socket's identity: if it is tracked on the
        message's topic, track it again with the new meta, replacing the old track at the
        owner in one step (``presence_tracking.updated``), so members get Phoenix's diff:
        the old meta leaving, the new one joining with ``phx_ref_prev``."""
        topic = message.get("topic")
        old = self._tracks.get(topic) if self.socket is not None else None
        if old is None:
            return
        new = presence_tracking.updated(old, message.get("meta") or {})
        group = group_for_topic(topic)
        try:
            await self.channel_layer.group_join(group, self.channel_name, {"presence": new})
        except Exception as exc:
            ws_counters.COUNTS.presence_update_errors += 1
            quiet = _PRESENCE_UPDATE_LINES.admit(PRESENCE_UPDATE_TYPE)
            if quiet is not None:
                logger.warning("presence update on %s failed: %s%s", topic,
                               _failure_reason("presence update", exc), held_back(quiet))
            return
        if topic not in self.socket.topics:
            # The topic was left while the update travelled: leave again, since the update
            # may have made this channel a member once more.
            await leave_group(self.channel_layer, group, self.channel_name, topic)
        elif self._tracks.get(topic) is old:
            self._tracks[topic] = new

    # --- idle timeout: on the loop's wheel (topics.transport.idle_timers), re-armed from the
    # last receive

    def _start_idle_timer(self) -> None:
        self._last_received = self._loop.time()
        # A long-poll session (topics.transport.longpoll) has its own expiry and sets 0 in its scope.
        self._idle_timeout = float(self.scope.get("dps.idle_timeout", getattr(
            settings, "DPS_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT)))
        if self._idle_timeout > 0:
            self._idle_timer = idle_timers(self._loop).call_at(
                self._last_received + self._idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        if self._loop.time() - self._last_received < self._idle_timeout:
            self._idle_timer = idle_timers(self._loop).call_at(
                self._last_received + self._idle_timeout, self._check_idle)
            return
        self._idle_timer = None
        if self.socket is not None:
            self._idle_close = self._loop.create_task(
                self._execute(self.socket.handle_idle_timeout()))
