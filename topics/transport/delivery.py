"""Member delivery: everything that goes out to one client connection, in order.

- The fastlane: the DPS layer hands a node's group messages to :meth:`MemberDelivery.fastlane`
  as a plain call (no queue, no task); broadcasts and presence messages are written from there.
- The frame: this member's join prefix plus the part every member shares, built once per node
  (``topics.transport.broadcasts``); binary broadcasts for V2 members, their base64 JSON form for
  V1 members; a broadcast carrying its position for a join that asked for offsets.
- The order: a direct write (``topics.adapters.direct_frames``) only while nothing is queued
  for ASGI send; otherwise the :class:`~topics.transport.sender.OrderedSender`. While a
  handler of the consumer runs (a join or publish awaiting the layer) broadcasts are held and
  go out after its reply, so a publisher's reply precedes its own copy.
- Slow clients: past ``DPS_MAX_PENDING_FRAMES`` frames or ``DPS_MAX_SEND_BUFFER_BYTES`` bytes
  waiting, the member leaves its topics and is closed with 1013 (counted in ``ws_counters``).
- A connection that closed under a send: the frame is moot, counted in ``SENDS_AFTER_CLOSE``.

It knows nothing of the channel layer or of handlers: the consumer gives it the socket state
machine, the connection's send, and what to do with a message that is not a broadcast and with
a slow client.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from channel_layer.presence import DIFF_TYPE, STATE_TYPE
from channel_layer.runtime import POSITION_KEY
from topics.adapters.direct_frames import NOT_OPEN, DirectFrames
from topics.protocol import Action, PhoenixSocket
from topics.protocol.topic_names import topic_for_group
from topics.transport import presence_tracking, ws_counters
from topics.transport.broadcasts import BROADCAST_TYPE, binary_frame, encoded_tail, is_binary, payload_json
from topics.transport.sender import OrderedSender

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING_FRAMES = 1000
DEFAULT_MAX_SEND_BUFFER_BYTES = 4 * 1024 * 1024
CLOSE_TRY_AGAIN_LATER = 1013  # a client too slow to take what it subscribed to
# Frames (by ASGI message type) that found their connection closed or closing, on this node.
SENDS_AFTER_CLOSE: Counter[str] = Counter()
PRESENCE_EVENTS = {DIFF_TYPE: "presence_diff", STATE_TYPE: "presence_state"}
_AS_BROADCAST = "_dps_as_broadcast"

Send = Callable[[dict], Awaitable[None]]


def presence_broadcast(message: dict[str, Any]) -> dict[str, Any]:
    """A presence message from the owner as the broadcast members receive (made once per
    node: members share the message)."""
    broadcast = message.get(_AS_BROADCAST)
    if broadcast is None:
        broadcast = message[_AS_BROADCAST] = {
            "type": BROADCAST_TYPE, "topic": topic_for_group(message["group"]),
            "event": PRESENCE_EVENTS[message["type"]], "payload": message["payload"]}
    return broadcast


class MemberDelivery:
    """What goes out to one connection. ``socket`` is set once the connection is admitted;
    until then only :meth:`send` is used (the handshake's answer)."""

    socket: PhoenixSocket | None = None

    def __init__(self, send: Send, *, max_pending_frames: int, max_send_buffer: int,
                 dispatch: Callable[[dict], Awaitable[None]],
                 on_slow_client: Callable[[list[Action]], Awaitable[None]]) -> None:
        self._base_send = send
        self.max_send_buffer = max_send_buffer
        self.sender = OrderedSender(self.send_to_client, max_pending_frames, max_send_buffer)
        self.direct: DirectFrames | None = None
        # Set once the client's connection is gone or this side sent its close: what is sent
        # after that goes nowhere (see send_to_client).
        self.connection_done = False
        self._dispatch = dispatch
        self._on_slow_client = on_slow_client
        self._loop = asyncio.get_running_loop()
        self._busy = 0
        self._held: list[dict] | None = None

    # --- the connection's send ------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """ASGI send behind everything queued (``SendQueueFull`` for a client too slow)."""
        await self.sender.send(message)

    async def send_text(self, text: str) -> None:
        """A reply frame: on the direct path like broadcasts (no ASGI send, same order)."""
        if self.direct is None or not self.write_direct(b"", text.encode()):
            await self.sender.send({"type": "websocket.send", "text": text})

    async def send_to_client(self, message: dict[str, Any]) -> None:
        """ASGI send to a connection that may close under it at any moment.

        A client can vanish between any two frames (a close right after a publish), and a
        publish's reply or a broadcast can be on its way when this side has just closed (a
        slow client). Servers then raise (uvicorn: ``ClientDisconnected``; both: "Unexpected
        ASGI message ... after sending 'websocket.close'"). That is not an error of this
        node: the frame is moot, and the server's ``websocket.disconnect`` frees the consumer.
        """
        if self.connection_done:
            SENDS_AFTER_CLOSE[message["type"]] += 1
            return
        if message["type"] == "websocket.close":
            self.connection_done = True
            self.direct = None
        try:
            await self._base_send(message)
        except (OSError, RuntimeError) as exc:
            self.connection_done = True
            self.direct = None
            SENDS_AFTER_CLOSE[message["type"]] += 1
            logger.debug("send to a closed connection: %s", type(exc).__name__)

    def write_direct(self, head: bytes, tail: bytes, binary: bool = False) -> bool:
        """Write the frame ``head + tail`` straight to the connection, behind nothing
        queued for ASGI send; False when ASGI send must take it instead."""
        direct = self.direct
        if direct is None or not self.sender.idle:
            return False
        backlog = direct.send(head, tail, binary)
        if backlog == NOT_OPEN:
            return False
        if backlog > self.max_send_buffer:
            self._drop_slow_client(f"{backlog} bytes")
        return True

    # --- holding broadcasts while the consumer handles a message ----------------------------

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def hold(self) -> None:
        """A handler starts: broadcasts wait until it is done (its reply goes first)."""
        self._busy += 1

    def release(self) -> None:
        """A handler is done: once none runs, what was held goes out, in arrival order."""
        self._busy -= 1
        if not self._busy and self._held:
            held, self._held = self._held, None
            for broadcast in held:
                self.deliver(broadcast)

    def hold_first(self, broadcasts: list[dict]) -> None:
        """Deliver ``broadcasts`` (a join's recovered ones) before any held so far."""
        self._held = broadcasts + (self._held or [])

    # --- broadcasts -----------------------------------------------------------------------

    def fastlane(self, message: dict[str, Any]) -> None:
        """A group message handed over directly by the DPS layer: no queue, no task."""
        if message.get("type") in PRESENCE_EVENTS:
            message = presence_broadcast(message)
        if message.get("type") != BROADCAST_TYPE:
            self._loop.create_task(self._dispatch(message))  # not a broadcast: the usual way
        elif self._busy:
            if self._held is None:
                self._held = []
            self._held.append(message)
        else:
            self.deliver(message)

    def deliver(self, message: dict[str, Any]) -> None:
        """Send the broadcast with this member's join_ref; nothing is delivered for a topic no
        longer joined. On the direct path the frame is this join's prefix plus the rest of the
        frame, encoded once per node for all members (``broadcasts.encoded_tail``)."""
        socket = self.socket
        if socket is None:
            return
        if is_binary(message) and socket.serializer.BINARY:
            self._deliver_binary(socket, message)
            return
        position = message.get(POSITION_KEY)
        if position is not None and socket.wants_offsets(message["topic"]):
            self._send_positioned(socket, message, position)
            return
        if self.direct is not None:
            prefix = socket.broadcast_prefix_bytes(message["topic"])
            if prefix is None:
                return
            if self.write_direct(prefix, encoded_tail(message, socket.serializer)):
                ws_counters.record_delivery(message)
                return
        text = socket.render_broadcast(message["topic"], message["event"],
                                       payload_json(message))
        if text is not None:
            self._queue_frame({"type": "websocket.send", "text": text}, message)

    def _deliver_binary(self, socket: PhoenixSocket, message: dict[str, Any]) -> None:
        """The same binary broadcast frame for every member (it carries no join_ref)."""
        if socket.broadcast_prefix_bytes(message["topic"]) is None:
            return  # not joined (any more)
        frame = binary_frame(message)
        if self.direct is not None and self.write_direct(b"", frame, binary=True):
            ws_counters.record_delivery(message)
        else:
            self._queue_frame({"type": "websocket.send", "bytes": frame}, message)

    def _send_positioned(self, socket: PhoenixSocket, message: dict[str, Any],
                         position: list) -> None:
        """A broadcast to a join that asked for offsets: its own frame, with the position."""
        text = socket.render_broadcast(message["topic"], message["event"], payload_json(message),
                                       presence_tracking.position_ref(position))
        if text is None:
            return
        if self.direct is not None and self.write_direct(b"", text.encode()):
            ws_counters.record_delivery(message)
        else:
            self._queue_frame({"type": "websocket.send", "text": text}, message)

    def _queue_frame(self, send: dict[str, Any], message: dict[str, Any]) -> None:
        if self.sender.send_nowait(send):
            ws_counters.record_delivery(message)
        else:
            self._drop_slow_client(f"{self.sender.pending} frames, "
                                   f"{self.sender.pending_bytes} bytes")

    def _drop_slow_client(self, backlog: str) -> None:
        logger.warning("closing a client %s behind", backlog)
        ws_counters.COUNTS.slow_client_disconnects += 1
        self.direct = None
        # Leave every topic now, so the rest of this batch renders nothing more for it.
        unsubscribes = self.socket.handle_disconnect()
        self._loop.create_task(self._on_slow_client(unsubscribes))
