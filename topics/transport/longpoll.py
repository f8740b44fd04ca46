"""The long-poll transport at ``/socket/longpoll``, as phoenix.js's ``LongPoll`` speaks it.

A session is the WebSocket consumer itself (``topics.transport.routing.websocket_app``, with whatever
connect hook and middleware wrap it), driven through an ASGI WebSocket connection that lives in
memory: a POST's lines become ``websocket.receive`` messages, what the consumer sends is kept
until the next poll. So long-poll sockets get the same protocol, limits, topic handlers and
layer path as WebSocket sockets, with no second adapter.

The HTTP exchange (Phoenix 1.8's ``Phoenix.Transports.LongPoll``): every answer is HTTP 200 with
a JSON body whose ``status`` says what happened.

- ``GET`` without a token: a new session; ``{"status": 410, "token": T}`` once the consumer
  accepted the connection, ``{"status": 403}`` when it refused it (e.g. an unsupported vsn).
- ``GET ?token=T``: the frames waiting for the client, at once ``{"status": 200, "token": T,
  "messages": [...]}``, or after ``DPS_LONGPOLL_WINDOW`` seconds with nothing
  ``{"status": 204, "token": T, "messages": []}``.
- ``POST ?token=T`` with ``application/x-ndjson``: one frame per line (a JSON text frame, or the
  base64 of a binary frame, which is how phoenix.js sends an ``ArrayBuffer``);
  ``{"status": 200}``. Replies come with the next poll.
- A token this node does not know (expired, closed, or another node's): ``{"status": 410}``;
  phoenix.js then opens a new session and rejoins.

Where DPS differs: tokens are random capabilities held in this node's memory (Phoenix signs a
token naming the session's process, reachable from any node), so a client's polls must reach
the node that created its session (sticky sessions; see the README). A binary broadcast reaches
a long-poll client as a JSON broadcast whose payload is ``{"binary": "<base64>"}``: phoenix.js
decodes every long-poll message with ``JSON.parse``. No CORS headers are sent, so only same-origin
pages and non-browser clients can read the answers.

Bounds (settings, see the README): ``DPS_LONGPOLL_IDLE_TIMEOUT`` without a poll ends a session;
``DPS_LONGPOLL_MAX_BUFFER_BYTES`` of frames waiting for a poll ends it (a counted drop, like a
slow WebSocket client's 1013); ``DPS_LONGPOLL_MAX_SESSIONS`` per node; a POST body over
``DPS_LONGPOLL_MAX_BODY_BYTES`` gets HTTP 413; at most ``DPS_LONGPOLL_MAX_PENDING_FRAMES``
posted frames wait for the consumer, beyond which a POST waits (backpressure).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from django.conf import settings

from topics.protocol import v2_binary
from topics.protocol.message import dumps
from topics.transport.broadcasts import binary_as_json

logger = logging.getLogger(__name__)

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
PATH = "/socket/longpoll"
WEBSOCKET_PATH = "/socket/websocket"

# What happened to sessions and requests on this node (nothing is dropped without a count).
STATS: Counter[str] = Counter()


@dataclass(frozen=True)
class LongPollLimits:
    window: float = 10.0
    idle_timeout: float = 20.0
    max_buffer_bytes: int = 1024 * 1024
    max_sessions: int = 10_000
    max_body_bytes: int = 4 * 1024 * 1024
    max_pending_frames: int = 100

    @classmethod
    def from_settings(cls) -> LongPollLimits:
        default = cls()
        return cls(
            window=float(getattr(settings, "DPS_LONGPOLL_WINDOW", default.window)),
            idle_timeout=float(getattr(settings, "DPS_LONGPOLL_IDLE_TIMEOUT",
                                       default.idle_timeout)),
            max_buffer_bytes=int(getattr(settings, "DPS_LONGPOLL_MAX_BUFFER_BYTES",
                                         default.max_buffer_bytes)),
            max_sessions=int(getattr(settings, "DPS_LONGPOLL_MAX_SESSIONS",
                                     default.max_sessions)),
            max_body_bytes=int(getattr(settings, "DPS_LONGPOLL_MAX_BODY_BYTES",
                                       default.max_body_bytes)),
            max_pending_frames=int(getattr(settings, "DPS_LONGPOLL_MAX_PENDING_FRAMES",
                                           default.max_pending_frames)),
        )


def frame_of_line(line: bytes) -> dict[str, Any]:
    """The ``websocket.receive`` message for one posted line: JSON text stays text; anything
    else that is base64 is a binary frame (phoenix.js base64-encodes an ``ArrayBuffer``);
    what is neither goes to the socket as text, which answers it as it would over a WebSocket.
    ``UnicodeDecodeError`` for a line that is not UTF-8."""
    text = line.decode("utf-8")
    stripped = text.lstrip()
    if stripped[:1] not in ("[", "{", ""):
        try:
            return {"type": "websocket.receive", "bytes": base64.b64decode(text, validate=True)}
        except (binascii.Error, ValueError):
            pass
    return {"type": "websocket.receive", "text": text}


def _message_text(send: dict[str, Any]) -> str:
    """A frame the consumer sent, as the JSON text a long-poll client reads."""
    text = send.get("text")
    if text is not None:
        return text
    topic, event, data = v2_binary.decode_broadcast(send.get("bytes") or b"")
    return '[null,null,' + dumps(topic) + "," + dumps(event) + "," + binary_as_json(data) + "]"


class LongPollSession:
    """One long-poll client: the consumer on an in-memory WebSocket connection."""

    def __init__(self, token: str, limits: LongPollLimits) -> None:
        self.token = token
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.accepted: asyncio.Future[bool] = self.loop.create_future()
        self.closed = False
        self.last_poll = self.loop.time()
        self._inbound: asyncio.Queue[dict] = asyncio.Queue(limits.max_pending_frames)
        self._outbox: deque[str] = deque()
        self._outbox_bytes = 0
        self._arrived = asyncio.Event()
        self._poller: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    def start(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        self._inbound.put_nowait({"type": "websocket.connect"})
        self._task = self.loop.create_task(self._run(app, scope))

    async def _run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self._inbound.get, self._send)
        except Exception:
            logger.exception("a long-poll session's consumer failed")
            STATS["consumer_failed"] += 1
        finally:
            self.closed = True
            if not self.accepted.done():
                self.accepted.set_result(False)
            self._arrived.set()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if not self.accepted.done():
                self.accepted.set_result(True)
        elif kind == "websocket.close":
            self.end("closed by the socket")
        elif kind == "websocket.send" and not self.closed:
            self._buffer(_message_text(message))

    def _buffer(self, text: str) -> None:
        self._outbox.append(text)
        self._outbox_bytes += len(text)
        if self._outbox_bytes > self.limits.max_buffer_bytes:
            logger.warning("closing a long-poll session %d bytes behind", self._outbox_bytes)
            STATS["closed_buffer_full"] += 1
            self._outbox.clear()
            self._outbox_bytes = 0
            self.end("buffer full")
        self._arrived.set()

    def end(self, why: str) -> None:
        """Stop the session: the consumer sees the connection go (and leaves its topics)."""
        if self.closed:
            return
        self.closed = True
        if not self.accepted.done():
            self.accepted.set_result(False)
        try:
            self._inbound.put_nowait({"type": "websocket.disconnect", "code": 1000})
        except asyncio.QueueFull:
            # The consumer is behind on posted frames: make room, it is going anyway.
            self._inbound.get_nowait()
            self._inbound.put_nowait({"type": "websocket.disconnect", "code": 1000})
        self._arrived.set()
        logger.debug("long-poll session ended: %s", why)

    async def post(self, frames: list[dict[str, Any]]) -> None:
        """Hand posted frames to the consumer, waiting while it is behind (backpressure)."""
        for frame in frames:
            if self.closed:
                return
            await self._inbound.put(frame)

    async def poll(self, disconnected: asyncio.Future) -> list[str] | None:
        """The frames waiting, after at most one window; None when the client went away
        first (its frames stay for the next poll)."""
        self.last_poll = self.loop.time()
        if self._poller is not None and not self._poller.done():
            self._poller.set_result(None)  # an older poll of this session answers 204 now
        poller = self._poller = self.loop.create_future()
        try:
            while not self._outbox and not self.closed:
                self._arrived.clear()
                arrived = self.loop.create_task(self._arrived.wait())
                done, _ = await asyncio.wait(
                    (arrived, poller, disconnected), timeout=self.limits.window,
                    return_when=asyncio.FIRST_COMPLETED)
                arrived.cancel()
                if disconnected in done:
                    return None
                if not done or poller in done:
                    break
        finally:
            self.last_poll = self.loop.time()
        messages = list(self._outbox)
        self._outbox.clear()
        self._outbox_bytes = 0
        return messages

    def idle_for(self) -> float:
        return self.loop.time() - self.last_poll


class LongPollEndpoint:
    """The ASGI HTTP application for ``/socket/longpoll``: sessions by token, and their expiry."""

    def __init__(self, websocket_app: ASGIApp) -> None:
        self.websocket_app = websocket_app
        self.sessions: dict[str, LongPollSession] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self._reaper_loop: asyncio.AbstractEventLoop | None = None

    @property
    def limits(self) -> LongPollLimits:
        return LongPollLimits.from_settings()  # a few getattr calls, read at use

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        method = scope.get("method")
        if method == "GET":
            if "token" not in params:
                await self._new_session(scope, params, send)
            else:
                await self._poll(params["token"], receive, send)
        elif method == "POST":
            await self._post(scope, params.get("token"), receive, send)
        else:
            await respond(send, 400, None)

    async def _new_session(self, scope: dict, params: dict[str, str], send: Callable) -> None:
        self._reap_soon()
        if len(self.sessions) >= self.limits.max_sessions:
            STATS["refused_too_many_sessions"] += 1
            await respond(send, 200, {"status": 500})  # phoenix.js retries later
            return
        token = secrets.token_urlsafe(24)
        session = LongPollSession(token, self.limits)
        session.start(self.websocket_app, _websocket_scope(scope, params))
        try:  # a connect hook that never answers must not hold the request forever
            accepted = await asyncio.wait_for(asyncio.shield(session.accepted),
                                              self.limits.window)
        except TimeoutError:
            session.end("no answer from the socket")
            STATS["connect_timeouts"] += 1
            await respond(send, 200, {"status": 500})  # phoenix.js retries later
            return
        if not accepted:
            session.end("refused")
            STATS["refused_by_consumer"] += 1
            await respond(send, 200, {"status": 403})
            return
        self.sessions[token] = session
        STATS["sessions_started"] += 1
        await respond(send, 200, {"status": 410, "token": token})

    async def _poll(self, token: str, receive: Callable, send: Callable) -> None:
        session = self.sessions.get(token)
        if session is None:
            await respond(send, 200, {"status": 410})
            return
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            messages = await session.poll(disconnected)
        finally:
            disconnected.cancel()
        if messages is None:
            return  # the client left; nothing was taken from the session
        if not messages and session.closed:
            self.sessions.pop(token, None)
            await respond(send, 200, {"status": 410})
            return
        await respond(send, 200, {"status": 200 if messages else 204, "token": token,
                                  "messages": messages})

    async def _post(self, scope: dict, token: str | None, receive: Callable,
                    send: Callable) -> None:
        session = self.sessions.get(token) if token else None
        body = await _read_body(receive, self.limits.max_body_bytes)
        if body is None:
            STATS["refused_body_too_large"] += 1
            await respond(send, 413, {"status": 413})
            return
        if session is None or session.closed:
            await respond(send, 200, {"status": 410})
            return
        lines = body.split(b"\n") if _is_ndjson(scope) else [body]
        try:
            frames = [frame_of_line(line.removesuffix(b"\r")) for line in lines]
        except UnicodeDecodeError:
            # What a WebSocket closes with 1007: this session ends.
            STATS["closed_invalid_utf8"] += 1
            session.end("invalid UTF-8")
            await respond(send, 200, {"status": 400})
            return
        await session.post(frames)
        await respond(send, 200, {"status": 200})

    def _reap_soon(self) -> None:
        loop = asyncio.get_running_loop()
        # One reaper per serving loop (a test suite runs several loops, one after the other).
        if self._reaper is None or self._reaper_loop is not loop:
            self._reaper_loop = loop
            self._reaper = loop.call_later(self.limits.idle_timeout / 2, self._reap)

    def _reap(self) -> None:
        """End the sessions nobody polled for ``DPS_LONGPOLL_IDLE_TIMEOUT`` (and forget the
        closed ones whose client never came back for them)."""
        self._reaper = None
        for token, session in list(self.sessions.items()):
            if session.loop is not self._reaper_loop:
                del self.sessions[token]  # its loop has gone: nothing of it can still run
            elif session.idle_for() > self.limits.idle_timeout:
                if not session.closed:
                    STATS["expired_idle"] += 1
                session.end("idle")
                del self.sessions[token]
        if self.sessions:
            self._reap_soon()


def _websocket_scope(scope: dict, params: dict[str, str]) -> dict[str, Any]:
    """The scope of the in-memory WebSocket connection the consumer sees: the request's
    headers, client and query (the connect hook reads them), on the WebSocket path."""
    return {
        "type": "websocket", "asgi": scope.get("asgi", {"version": "3.0"}),
        "scheme": "wss" if scope.get("scheme") == "https" else "ws",
        "path": WEBSOCKET_PATH, "raw_path": WEBSOCKET_PATH.encode(),
        "query_string": urlencode(params).encode(), "root_path": scope.get("root_path", ""),
        "headers": scope.get("headers", []), "client": scope.get("client"),
        "server": scope.get("server"), "subprotocols": [],
        "dps.transport": "longpoll",
        "dps.idle_timeout": 0,  # the session's own idle expiry applies instead
    }


def _is_ndjson(scope: dict) -> bool:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/x-ndjson"
    return False


async def _read_body(receive: Callable, limit: int) -> bytes | None:
    """The request body, or None as soon as it is over ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _wait_disconnect(receive: Callable) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def respond(send: Callable, status: int, body: dict[str, Any] | None) -> None:
    content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": content})
