"""The long-poll transport at ``/socket/longpoll``, as phoenix.js's ``LongPoll`` speaks it.

A session is the WebSocket consumer itself (``topics.transport.routing.websocket_app``, with whatever
connect hook and middleware wrap it), driven through an ASGI WebSocket connection that lives in
memory: a POST's lines become ``websocket.receive`` messages, what the consumer sends is kept
until the next poll. So long-poll sockets get the same protocol, limits, topic handlers and
layer path as WebSocket sockets, with no second adapter.

The HTTP exchange is Phoenix 1.8's ``Phoenix.Transports.LongPoll`` (every answer HTTP 200 with a
JSON ``status``); docs/longpoll.md has the table, the parameter names and the differences.
``topics.transport.longpoll_http`` reads the request (session token, auth token, credentials)
and writes the answer (CORS headers).

- ``GET`` naming no live session (none, an expired one, another node's): a new session,
  ``{"status": 410, "token": T}`` once the consumer accepted it, ``{"status": 403}`` when it
  refused it. phoenix.js 1.8 then reconnects and rejoins; 1.7 takes the token and believes
  its channels joined, so the first poll of a session opened for a stale token that nothing
  was posted to answers ``{"status": 500}``, which makes 1.7 reconnect and rejoin too.
- ``GET`` of a session: its waiting frames at once (``200``), or ``204`` after
  ``DPS_LONGPOLL_WINDOW`` seconds with nothing.
- ``POST`` with ``application/x-ndjson``: one frame per non-empty line (JSON text, or the base64
  of a binary frame), at most ``DPS_LONGPOLL_MAX_FRAMES_PER_POST``; answered ``200`` once the
  consumer has taken every frame (Phoenix waits for dispatch too), ``408`` after a window.
- ``OPTIONS``: a CORS preflight's answer. A request whose ``Origin`` the Origin check refuses
  gets ``{"status": 403}``; an allowed one gets ``Access-Control-Allow-Origin``.
- A session is bound to what made it: a request from another Origin, or without its session
  cookie or auth token (``longpoll_http.Credentials``), is treated as naming no session.

Where DPS differs: tokens are random capabilities held in this node's memory (Phoenix signs a
token naming the session's process, reachable from any node), so a client's polls must reach
the node that created its session (sticky sessions). A binary broadcast reaches a long-poll
client as a JSON broadcast whose payload is ``{"binary": "<base64>"}``: phoenix.js decodes every
long-poll message with ``JSON.parse``.

Bounds (settings): ``DPS_LONGPOLL_IDLE_TIMEOUT`` without a poll ends a session;
``DPS_LONGPOLL_MAX_BUFFER_BYTES`` of frames waiting for a poll ends it (a counted drop, like a
slow WebSocket client's 1013); ``DPS_LONGPOLL_MAX_SESSIONS`` per node; a POST body over
``DPS_LONGPOLL_MAX_BODY_BYTES`` gets HTTP 413, one of more than
``DPS_LONGPOLL_MAX_FRAMES_PER_POST`` frames ``{"status": 413}`` (nothing of it is handled); at
most ``DPS_LONGPOLL_MAX_PENDING_FRAMES`` posted frames wait for the consumer.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from topics.hooks.origin import origin_allowed
from topics.protocol import v2_binary
from topics.protocol.message import dumps
from topics.transport.broadcasts import binary_as_json
from topics.transport.longpoll_http import (
    SESSION_TOKEN_PREFIX,
    Credentials,
    LongPollRequest,
    body_lines,
    cors_headers,
    count_up_to,
    is_ndjson,
    preflight_headers,
    read_body,
    read_request,
    respond,
)

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
    max_frames_per_post: int = 100  # Phoenix's and phoenix.js's batch size

    @classmethod
    def from_settings(cls) -> LongPollLimits:
        default = cls()
        return cls(**{name: type(value)(getattr(settings, f"DPS_LONGPOLL_{name.upper()}", value))
                      for name, value in default.__dict__.items()})


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

    def __init__(self, token: str, limits: LongPollLimits, request: LongPollRequest,
                 replaces_stale: bool = False) -> None:
        self.token = token
        self.limits = limits
        self.origin = request.origin
        self.credentials: Credentials = request.credentials
        # Opened for a token naming no session: see the module's docstring.
        self.replaces_stale = replaces_stale
        self.loop = asyncio.get_running_loop()
        self.accepted: asyncio.Future[bool] = self.loop.create_future()
        self.closed = False
        self.last_poll = self.loop.time()
        self._inbound: asyncio.Queue[dict] = asyncio.Queue(limits.max_pending_frames)
        self._put = 0  # messages put on _inbound, the connect message included
        self._taken = 0  # calls of the consumer's receive: message n is handled once n+1 is
        self._progress = asyncio.Event()
        self._outbox: deque[str] = deque()
        self._outbox_bytes = 0
        self._arrived = asyncio.Event()
        self._poller: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    def start(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        self._put_now({"type": "websocket.connect"})
        self._task = self.loop.create_task(self._run(app, scope))

    def _put_now(self, message: dict[str, Any]) -> None:
        self._inbound.put_nowait(message)
        self._put += 1

    async def _receive(self) -> dict[str, Any]:
        self._taken += 1
        self._progress.set()
        return await self._inbound.get()

    async def _run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self._receive, self._send)
        except Exception:
            logger.exception("a long-poll session's consumer failed")
            STATS["consumer_failed"] += 1
        finally:
            self.closed = True
            if not self.accepted.done():
                self.accepted.set_result(False)
            self._arrived.set()
            self._progress.set()

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
        if self._inbound.full():
            # The consumer is behind on posted frames: make room, it is going anyway.
            self._inbound.get_nowait()
        self._put_now({"type": "websocket.disconnect", "code": 1000})
        self._arrived.set()
        self._progress.set()
        logger.debug("long-poll session ended: %s", why)

    async def post(self, frame: dict[str, Any]) -> None:
        """Hand a posted frame to the consumer, waiting while it is behind (backpressure)."""
        self.replaces_stale = False  # the client rejoins on its own
        if not self.closed:
            await self._inbound.put(frame)
            self._put += 1

    async def dispatched(self) -> None:
        """Return once the consumer has handled every frame posted so far (it asked for the
        message after the last), or the session has ended."""
        while self._taken <= self._put and not self.closed:
            self._progress.clear()
            await self._progress.wait()

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
        request = read_request(scope)
        if request.origin is not None and not origin_allowed(request.origin):
            STATS["refused_origin"] += 1
            await respond(send, 200, {"status": 403})  # as Phoenix's check_origin answers
            return
        cors = cors_headers(request.origin)
        if request.method == "OPTIONS":
            await respond(send, 200, None, preflight_headers(request))
        elif request.method == "GET":
            session = self._session_of(request, polling=True)
            if session is None:
                await self._new_session(scope, request, send, cors)
            else:
                await self._poll(scope, session, request, receive, send, cors)
        elif request.method == "POST":
            await self._post(scope, self._session_of(request, polling=False), receive, send,
                             cors)
        else:
            await respond(send, 400, None, cors)

    def _session_of(self, request: LongPollRequest, polling: bool) -> LongPollSession | None:
        """The live session a request names and may use, or None."""
        session = self.sessions.get(request.session_token or "")
        if session is None:
            return None
        if ((request.origin is not None and session.origin is not None
             and request.origin != session.origin)
                or not request.credentials.can_use(session.credentials, polling=polling)):
            STATS["refused_other_credentials"] += 1
            return None
        return session

    async def _new_session(self, scope: dict, request: LongPollRequest, send: Callable,
                           cors: list) -> None:
        self._reap_soon()
        if len(self.sessions) >= self.limits.max_sessions:
            STATS["refused_too_many_sessions"] += 1
            await respond(send, 200, {"status": 500}, cors)  # phoenix.js retries later
            return
        token = SESSION_TOKEN_PREFIX + secrets.token_urlsafe(24)
        stale = request.session_token is not None
        session = LongPollSession(token, self.limits, request, replaces_stale=stale)
        session.start(self.websocket_app, _websocket_scope(scope, request.connect_query))
        try:  # a connect hook that never answers must not hold the request forever
            accepted = await asyncio.wait_for(asyncio.shield(session.accepted),
                                              self.limits.window)
        except TimeoutError:
            session.end("no answer from the socket")
            STATS["connect_timeouts"] += 1
            await respond(send, 200, {"status": 500}, cors)  # phoenix.js retries later
            return
        if not accepted:
            session.end("refused")
            STATS["refused_by_consumer"] += 1
            await respond(send, 200, {"status": 403}, cors)
            return
        self.sessions[token] = session
        STATS["sessions_started"] += 1
        if stale:
            STATS["sessions_for_stale_tokens"] += 1
        await respond(send, 200, {"status": 410, "token": token, "messages": []}, cors)

    async def _poll(self, scope: dict, session: LongPollSession, request: LongPollRequest,
                    receive: Callable, send: Callable, cors: list) -> None:
        if session.replaces_stale:
            # phoenix.js 1.7 took the new token and thinks its channels joined: an error
            # makes it reconnect and rejoin (1.8 has reconnected on the 410 already).
            self.sessions.pop(session.token, None)
            session.end("opened for a stale token, never posted to")
            STATS["stale_sessions_refused_at_first_poll"] += 1
            await respond(send, 200, {"status": 500}, cors)
            return
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            messages = await session.poll(disconnected)
        finally:
            disconnected.cancel()
        if messages is None:
            return  # the client left; nothing was taken from the session
        if not messages and session.closed:
            self.sessions.pop(session.token, None)
            await self._new_session(scope, request, send, cors)  # as Phoenix: 410 + token
            return
        await respond(send, 200, {"status": 200 if messages else 204, "token": session.token,
                                  "messages": messages}, cors)

    async def _post(self, scope: dict, session: LongPollSession | None, receive: Callable,
                    send: Callable, cors: list) -> None:
        limits = self.limits
        body = await read_body(receive, limits.max_body_bytes)
        if body is None:
            STATS["refused_body_too_large"] += 1
            await respond(send, 413, {"status": 413}, cors)
            return
        if session is None or session.closed:
            await respond(send, 200, {"status": 410}, cors)
            return
        ndjson = is_ndjson(scope)
        if ndjson and count_up_to(body_lines(body), limits.max_frames_per_post) \
                > limits.max_frames_per_post:
            STATS["refused_too_many_frames"] += 1
            await respond(send, 200, {"status": 413}, cors)
            return
        try:
            for line in body_lines(body) if ndjson else (body,):
                await session.post(frame_of_line(line))
        except UnicodeDecodeError:
            # What a WebSocket closes with 1007: this session ends (the lines before it
            # were handled, as a WebSocket's earlier frames are).
            STATS["closed_invalid_utf8"] += 1
            session.end("invalid UTF-8")
            await respond(send, 200, {"status": 400}, cors)
            return
        try:
            await asyncio.wait_for(session.dispatched(), limits.window)
        except TimeoutError:
            STATS["post_timeouts"] += 1
            await respond(send, 200, {"status": 408}, cors)  # as Phoenix: request timeout
            return
        await respond(send, 200, {"status": 200}, cors)

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


def _websocket_scope(scope: dict, query: bytes) -> dict[str, Any]:
    """The scope of the in-memory WebSocket connection the consumer sees: the request's
    headers, client and query (the connect hook reads them), on the WebSocket path."""
    return {
        "type": "websocket", "asgi": scope.get("asgi", {"version": "3.0"}),
        "scheme": "wss" if scope.get("scheme") == "https" else "ws",
        "path": WEBSOCKET_PATH, "raw_path": WEBSOCKET_PATH.encode(),
        "query_string": query, "root_path": scope.get("root_path", ""),
        "headers": scope.get("headers", []), "client": scope.get("client"),
        "server": scope.get("server"), "subprotocols": [],
        "dps.transport": "longpoll",
        "dps.idle_timeout": 0,  # the session's own idle expiry applies instead
    }


async def _wait_disconnect(receive: Callable) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
