"""The WebSocket adapter around the pure Phoenix socket (``topics.protocol``).

It owns the I/O only: accepting or refusing the connection, feeding received frames to a
:class:`PhoenixSocket`, executing the actions it returns against the channel layer, sending
broadcasts to the client, and closing idle connections. Every protocol rule lives in the
protocol package.

The group message that ``group_send`` carries to every member of a topic's group (JSON text
or binary payloads, and the publisher's ``sent_at`` for ``topics.transport.ws_counters``) is defined in
``topics.transport.broadcasts``.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import ChannelFull, StopConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from channel_layer.presence import DIFF_TYPE, STATE_TYPE
from channel_layer.runtime import POSITION_KEY
from topics.adapters.direct_frames import NOT_OPEN, DirectFrames, direct_frames_for
from topics.adapters.direct_receive import receive_directly, stop_receiving
from topics.hooks import limits
from topics.hooks.auth import authenticate, connect_params
from topics.hooks.handlers import BoundHandler, Refused, Reply, SocketContext, topic_routes
from topics.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_TOPICS,
    Action,
    Close,
    PhoenixSocket,
    Publish,
    PublishBinary,
    SendFrame,
    Serializer,
    Subscribe,
    Unsubscribe,
    encode_event,
    serializer_for_query_string,
)
from topics.protocol.topic_names import topic_for_group
from topics.transport import connections, presence_tracking, ws_counters
from topics.transport.broadcasts import (
    BROADCAST_TYPE,
    binary_as_json,
    binary_frame,
    broadcast_message,
    is_binary,
)
from topics.transport.handshake import refuse
from topics.transport.idle_timers import IdleTimer, idle_timers
from topics.transport.sender import OrderedSender

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_PENDING_FRAMES = 1000
DEFAULT_MAX_SEND_BUFFER_BYTES = 4 * 1024 * 1024
CLOSE_TRY_AGAIN_LATER = 1013  # a client too slow to take what it subscribed to
# What topics.api.disconnect sends to an identity's group: close that identity's sockets.
DISCONNECT_TYPE = "dps.disconnect"
# Frames (by ASGI message type) that found their connection closed or closing, on this node.
SENDS_AFTER_CLOSE: Counter[str] = Counter()
_ENCODED_TAILS = "_dps_encoded_tails"
_AS_BROADCAST = "_dps_as_broadcast"
PRESENCE_EVENTS = {DIFF_TYPE: "presence_diff", STATE_TYPE: "presence_state"}


def _encoded_tail(message: dict[str, Any], serializer: Serializer) -> bytes:
    """The UTF-8 part of a broadcast frame that every member shares, encoded by the first
    member that needs it and kept on the message: the layer hands one message object to all of
    a node's members, so this runs once per node and serializer, not once per member."""
    tails = message.get(_ENCODED_TAILS)
    if tails is None:
        tails = message[_ENCODED_TAILS] = {}
    tail = tails.get(serializer)
    if tail is None:
        tail = tails[serializer] = serializer.broadcast_tail(
            encode_event(message["event"]), message["payload"]).encode()
    return tail


def _presence_broadcast(message: dict[str, Any]) -> dict[str, Any]:
    """A presence message from the owner as the broadcast members receive (made once per
    node: members share the message)."""
    broadcast = message.get(_AS_BROADCAST)
    if broadcast is None:
        broadcast = message[_AS_BROADCAST] = {
            "type": BROADCAST_TYPE, "topic": topic_for_group(message["group"]),
            "event": PRESENCE_EVENTS[message["type"]], "payload": message["payload"]}
    return broadcast


def _text_payload(message: dict[str, Any]) -> str:
    """A broadcast's payload as JSON text (binary as JSON: a V1 member, or a position)."""
    payload = message["payload"]
    return binary_as_json(payload) if isinstance(payload, bytes) else payload


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


class PhoenixSocketConsumer(AsyncConsumer):
    """One client connection speaking Phoenix Channels over ``/socket/websocket``."""

    socket: PhoenixSocket | None = None
    _idle_timer: IdleTimer | None = None
    _idle_close: asyncio.Task | None = None
    _sender: OrderedSender | None = None
    _direct: DirectFrames | None = None
    # While a handler runs (a join or publish awaiting the layer), fastlane broadcasts wait
    # here, so the handler's reply goes out first (the publisher's reply precedes its copy).
    _busy = 0
    _held: list[dict] | None = None
    # A client frame taken from ASGI receive and not yet handled: a frame read directly
    # (topics.adapters.direct_receive) must not overtake it.
    _taken = 0
    # Who the connect hook said this is (None until admitted), and each joined topic's handler
    # where it has something to run (the seed's has nothing: no entry, no cost).
    context: SocketContext | None = None
    _handlers: dict[str, BoundHandler]
    _bucket: limits.PublishBucket | None = None

    # Set once the client's connection is gone or this side sent its close: what is sent
    # after that goes nowhere (see _send_to_client).
    _connection_done = False
    _listener_failure: BaseException | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__`` with a lean receive path: the client's frames
        are awaited and dispatched in a plain loop, where ``await_many_dispatch`` would make
        a task and an ``asyncio.wait`` for every frame. Messages on this consumer's channel
        (everything a layer without a fastlane delivers; with DPS's, only what is ``send`` to
        the channel) have one long-lived listener. As in Channels, one message is handled at
        a time: the two take turns on a lock (uncontended, it costs no loop iteration)."""
        self.scope = scope
        self._turn = asyncio.Lock()
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        listener = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(self.channel_layer.receive,
                                                     self.channel_name)
            listener = asyncio.get_running_loop().create_task(
                self._listen_channel(asyncio.current_task()))
        try:
            turn = self._turn
            while True:
                message = await receive()
                self._taken += 1
                try:
                    async with turn:
                        await self.dispatch(message)
                finally:
                    self._taken -= 1
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            failure = self._listener_failure
            if isinstance(failure, StopConsumer):  # a channel message's handler ended it
                return
            if failure is not None:  # the listener's error ends the consumer, as in Channels
                raise failure from None
            raise
        finally:
            if listener is not None:
                listener.cancel()

    async def _listen_channel(self, consumer: asyncio.Task) -> None:
        try:
            turn = self._turn
            while True:
                message = await self.channel_receive()
                async with turn:
                    await self.dispatch(message)
        except StopConsumer:
            self._listener_failure = StopConsumer()
            consumer.cancel()
        except Exception as exc:
            self._listener_failure = exc
            consumer.cancel()

    async def send(self, message: dict[str, Any]) -> None:
        if self._sender is None:
            await self._send_to_client(message)
        else:
            await self._sender.send(message)

    async def _send_to_client(self, message: dict[str, Any]) -> None:
        """ASGI send to a connection that may close under it at any moment.

        A client can vanish between any two frames (a close right after a publish), and a
        publish's reply or a broadcast can be on its way when this side has just closed (a
        slow client). Servers then raise (uvicorn: ``ClientDisconnected``; both: "Unexpected
        ASGI message ... after sending 'websocket.close'"). That is not an error of this
        node: the frame is moot, and the server's ``websocket.disconnect`` frees the consumer.
        """
        if self._connection_done:
            SENDS_AFTER_CLOSE[message["type"]] += 1
            return
        if message["type"] == "websocket.close":
            self._connection_done = True
            self._direct = None
        try:
            await self.base_send(message)
        except (OSError, RuntimeError) as exc:
            self._connection_done = True
            self._direct = None
            SENDS_AFTER_CLOSE[message["type"]] += 1
            logger.debug("send to a closed connection: %s", type(exc).__name__)

    async def dispatch(self, message: dict[str, Any]) -> None:
        self._busy += 1
        try:
            # Not super().dispatch(): Channels closes stale database connections before every
            # message, a thread hop per frame, and the Phoenix socket never uses the database.
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"no handler for message type {message['type']!r}")
            await handler(message)
        except (StopConsumer, asyncio.CancelledError):
            raise
        except Exception:
            # A consumer that dies must not leave its memberships behind for group_expiry.
            await self._leave_everything()
            raise
        finally:
            self._busy -= 1
            if not self._busy and self._held:
                held, self._held = self._held, None
                for broadcast in held:
                    self._deliver_broadcast(broadcast)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        serializer = serializer_for_query_string(self.scope.get("query_string", b""))
        if serializer is None:
            await refuse(self.scope, self.base_send, 403, "unsupported vsn")
            return
        if not await self._admit():
            return
        self._routes = topic_routes()
        self._handlers = {}
        self.socket = PhoenixSocket(
            serializer,
            max_frame_bytes=getattr(settings, "DPS_MAX_FRAME_BYTES", DEFAULT_MAX_FRAME_BYTES),
            max_topics=getattr(settings, "DPS_MAX_TOPICS_PER_SOCKET", DEFAULT_MAX_TOPICS),
            routes=self._routes.routes,
        )
        self._presence_key = presence_tracking.new_socket_key()
        self._bucket = limits.publish_bucket(asyncio.get_running_loop().time())
        self._max_payload_bytes = limits.max_payload_bytes()
        await self.send({"type": "websocket.accept"})
        self._max_send_buffer = int(getattr(
            settings, "DPS_MAX_SEND_BUFFER_BYTES", DEFAULT_MAX_SEND_BUFFER_BYTES))
        self._sender = OrderedSender(self._send_to_client, int(getattr(
            settings, "DPS_MAX_PENDING_FRAMES", DEFAULT_MAX_PENDING_FRAMES)),
            self._max_send_buffer)
        add_fastlane = getattr(self.channel_layer, "add_fastlane", None)
        if add_fastlane is not None:
            # A long-poll session's connection is in memory: nothing to write frames to.
            if (getattr(settings, "DPS_DIRECT_FRAMES", True)
                    and self.scope.get("dps.transport") != "longpoll"):
                self._direct = direct_frames_for(self.base_send)
                if self._direct is not None:
                    receive_directly(self.base_send, self._receive_now)
            add_fastlane(self.channel_name, self._fastlane)
        self._start_idle_timer()

    async def _admit(self) -> bool:
        """Run the connect hook and the connection limits; on a refusal answer the handshake
        (403, 429 or 503) and return False. An admitted socket is counted in
        :mod:`topics.transport.connections` and joins its identity's group (for ``api.disconnect``)."""
        refusal = limits.connection_refusal(None)
        if refusal is None:
            params = connect_params(self.scope)
            identity = await authenticate(self.scope, params)
            if identity is None:
                refusal = (403, "unauthenticated")
            else:
                refusal = limits.connection_refusal(identity)
        if refusal is not None:
            connections.count_refusal(refusal[1])
            await refuse(self.scope, self.base_send, *refusal)
            return False
        self.context = SocketContext(identity, params, self.scope)
        connections.register(identity.name)
        if identity.group is not None:
            try:
                await self.channel_layer.group_add(identity.group, self.channel_name)
            except Exception as exc:
                logger.warning("could not register a socket of %s: %s", identity.name,
                               type(exc).__name__)
                self._forget_identity()
                await refuse(self.scope, self.base_send, limits.NODE_FULL,
                             "the cluster is unavailable")
                return False
        return True

    def _forget_identity(self) -> None:
        context, self.context = self.context, None
        if context is not None:
            connections.unregister(context.identity.name)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self.socket is None:
            return
        self._last_received = self._loop.time()
        frame = message.get("text")
        if frame is None:
            frame = message.get("bytes") or b""
        await self._execute(self.socket.handle_frame(frame))

    def _receive_now(self, frame: str | bytes) -> bool:
        """A client frame handed over in the server's read callback (``topics.adapters.direct_receive``)
        with nothing of this connection ahead of it: a heartbeat is answered here, with no
        wake-up of this consumer (an idle node's main cost). Any other frame, or any frame
        while this consumer is handling one, goes the usual way, through ASGI receive (False).
        """
        socket = self.socket
        if self._busy or self._taken or socket is None or isinstance(frame, bytes):
            return False
        actions = socket.handle_heartbeat_frame(frame)
        if actions is None:
            return False
        # A heartbeat changes no state: if its reply cannot be written here, the usual path
        # answers it instead.
        for action in actions:
            if not (isinstance(action, SendFrame) and self._write_direct(b"", action.text.encode())):
                return False
        self._last_received = self._loop.time()
        return True

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._connection_done = True
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
        context = self.context
        if context is not None:
            self._forget_identity()
            if context.identity.group is not None:
                await self._discard(context.identity.group, "identity group")

    async def dps_disconnect(self, message: dict[str, Any]) -> None:
        """``topics.api.disconnect`` of this socket's identity: close with 1000."""
        if self.socket is not None:
            await self._execute(self.socket.handle_server_disconnect())

    async def phx_broadcast(self, message: dict[str, Any]) -> None:
        """A publish on a topic this socket joined, through the layer's queue (any layer)."""
        self._deliver_broadcast(message)

    async def presence_diff(self, message: dict[str, Any]) -> None:
        self._deliver_broadcast(_presence_broadcast(message))

    presence_state = presence_diff

    def _fastlane(self, message: dict[str, Any]) -> None:
        """A group message handed over directly by the DPS layer: no queue, no task."""
        if message.get("type") in PRESENCE_EVENTS:
            message = _presence_broadcast(message)
        if message.get("type") != BROADCAST_TYPE:
            self._loop.create_task(self.dispatch(message))  # not a broadcast: the usual way
        elif self._busy:
            if self._held is None:
                self._held = []
            self._held.append(message)
        else:
            self._deliver_broadcast(message)

    def _deliver_broadcast(self, message: dict[str, Any]) -> None:
        """Send the broadcast with this member's join_ref; nothing is delivered for a topic no
        longer joined. On the direct path the frame is this join's prefix plus the rest of the
        frame, encoded once per node for all members (see :func:`_encoded_tail`)."""
        socket = self.socket
        if socket is None or self._sender is None:
            return
        if is_binary(message) and socket.serializer.BINARY:
            self._deliver_binary(socket, message)
            return
        position = message.get(POSITION_KEY)
        if position is not None and socket.wants_offsets(message["topic"]):
            self._send_positioned(socket, message, position)
            return
        if self._direct is not None:
            prefix = socket.broadcast_prefix_bytes(message["topic"])
            if prefix is None:
                return
            if self._write_direct(prefix, _encoded_tail(message, socket.serializer)):
                ws_counters.record_delivery(message)
                return
        text = socket.render_broadcast(message["topic"], message["event"],
                                       _text_payload(message))
        if text is not None:
            self._queue_frame({"type": "websocket.send", "text": text}, message)

    def _deliver_binary(self, socket: PhoenixSocket, message: dict[str, Any]) -> None:
        """The same binary broadcast frame for every member (it carries no join_ref)."""
        if socket.broadcast_prefix_bytes(message["topic"]) is None:
            return  # not joined (any more)
        frame = binary_frame(message)
        if self._direct is not None and self._write_direct(b"", frame, binary=True):
            ws_counters.record_delivery(message)
        else:
            self._queue_frame({"type": "websocket.send", "bytes": frame}, message)

    def _queue_frame(self, send: dict[str, Any], message: dict[str, Any]) -> None:
        if self._sender.send_nowait(send):
            ws_counters.record_delivery(message)
        else:
            self._drop_slow_client(f"{self._sender.pending} frames, "
                                   f"{self._sender.pending_bytes} bytes")

    def _send_positioned(self, socket: PhoenixSocket, message: dict[str, Any],
                         position: list) -> None:
        """A broadcast to a join that asked for offsets: its own frame, with the position."""
        text = socket.render_broadcast(message["topic"], message["event"],
                                       _text_payload(message), presence_tracking.position_ref(position))
        if text is None:
            return
        if self._direct is not None and self._write_direct(b"", text.encode()):
            ws_counters.record_delivery(message)
        else:
            self._queue_frame({"type": "websocket.send", "text": text}, message)

    def _write_direct(self, head: bytes, tail: bytes, binary: bool = False) -> bool:
        """Write the frame ``head + tail`` straight to the connection, behind nothing
        queued for ASGI send; False when ASGI send must take it instead."""
        direct = self._direct
        if direct is None or not self._sender.idle:
            return False
        backlog = direct.send(head, tail, binary)
        if backlog == NOT_OPEN:
            return False
        if backlog > self._max_send_buffer:
            self._drop_slow_client(f"{backlog} bytes")
        return True

    def _drop_slow_client(self, backlog: str) -> None:
        logger.warning("closing a client %s behind", backlog)
        ws_counters.COUNTS.slow_client_disconnects += 1
        self._direct = None
        # Leave every topic now, so the rest of this batch renders nothing more for it.
        unsubscribes = self.socket.handle_disconnect()
        self._loop.create_task(self._close_slow_client(unsubscribes))

    async def _close_slow_client(self, unsubscribes: list[Action]) -> None:
        await self._execute(unsubscribes)
        await self._leave_everything()
        await self._send_to_client({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})

    async def _execute(self, actions: list[Action]) -> None:
        socket = self.socket
        for action in actions:
            if isinstance(action, SendFrame):
                # Replies take the broadcasts' direct path too: no ASGI send, same order.
                if not (self._direct is not None
                        and self._write_direct(b"", action.text.encode())):
                    await self.send({"type": "websocket.send", "text": action.text})
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
        replaced = self._handlers.pop(action.topic, None)
        if replaced is not None:
            await replaced.run_leave(self.context, action.topic)
        if handler is not None and not handler.passthrough:
            self._handlers[action.topic] = handler
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
            options["presence"] = presence_tracking.track(self.scope, self._presence_key, action.payload,
                                                 self.context.identity.user_id)
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
        them (``_held``)."""
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
            self._held = recovered + (self._held or [])
        return actions

    async def _publish(self, socket: PhoenixSocket,
                       action: Publish | PublishBinary) -> list[Action]:
        bucket = self._bucket
        if bucket is not None and not bucket.take(self._loop.time()):
            return socket.publish_failed(action, limits.RATE_LIMITED)
        payload = action.data if isinstance(action, PublishBinary) else action.payload_json
        too_large = limits.payload_too_large(payload, self._max_payload_bytes)
        if too_large is not None:
            return socket.publish_failed(action, too_large)
        event = action.event
        handler = self._handlers.get(action.topic)
        if handler is not None and handler.handle_in is not None:
            outcome = await handler.run_handle_in(self.context, event, payload)
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
        await self._discard(action.group, action.topic)
        handler = self._handlers.pop(action.topic, None)
        if handler is not None:
            await handler.run_leave(self.context, action.topic)

    async def _discard(self, group: str, what: str) -> None:
        try:
            await self.channel_layer.group_discard(group, self.channel_name)
        except Exception as exc:
            # The socket has already dropped the topic, so nothing more is delivered to the
            # client either way; the layer's own expiry removes the stale membership.
            logger.warning("leave of %s failed: %s", what, type(exc).__name__)

    # --- idle timeout: on the loop's wheel (topics.transport.idle_timers), re-armed from the last receive

    def _start_idle_timer(self) -> None:
        self._loop = asyncio.get_running_loop()
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
