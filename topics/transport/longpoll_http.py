"""The HTTP side of the long-poll transport: what a request names and what an answer carries.

:func:`read_request` takes apart one ``/socket/longpoll`` request the way phoenix.js of every
version sends it (docs/longpoll.md):

- the session token: the ``x-phoenix-longpoll-token`` header (phoenix.js after 1.8; Phoenix
  reads it since 1.8.10), else the last ``token`` query parameter that has the session-token
  prefix :data:`SESSION_TOKEN_PREFIX` (phoenix.js 1.7 and 1.8 append ``token=<session>`` to
  the socket's own params);
- the auth token: the ``x-phoenix-authtoken`` header (phoenix.js 1.8's ``authToken`` option),
  else the ``auth_token`` query parameter, else a ``token`` param that is not a session token
  (phoenix.js's ``params: {token}``). The connect hook sees it as ``token``, as a WebSocket's;
- the credentials a session is bound to: the auth token and the Django session cookie
  (:class:`Credentials`), and the Origin.

It also owns the answers (:func:`respond`, with CORS headers for allowed origins) and the
ndjson body, read up to a limit and taken apart one line at a time (:func:`body_lines`).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from django.conf import settings
from django.http.cookie import parse_cookie

SESSION_TOKEN_PREFIX = "lp~"  # never in a signed token (base64url and ":"), so never ambiguous
SESSION_PARAM = "token"
AUTH_TOKEN_PARAM = "auth_token"
SESSION_HEADER = b"x-phoenix-longpoll-token"
AUTH_TOKEN_HEADER = b"x-phoenix-authtoken"
_LINE = re.compile(rb"[^\n]+")  # a run of newlines is skipped in C, not line by line


def _digest(value: str | None) -> bytes | None:
    return None if value is None else hashlib.sha256(value.encode("utf-8", "replace")).digest()


def _same(a: bytes | None, b: bytes | None) -> bool:
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class Credentials:
    """What a request proves about its client (as digests: the values are secrets)."""

    auth_token: bytes | None
    session_cookie: bytes | None

    def can_use(self, made_by: Credentials, *, polling: bool) -> bool:
        """Whether a request with these credentials may use a session made with ``made_by``:
        the same session cookie, and the same auth token where it carries one. A poll (it
        reads the user's messages) must carry it; a post may leave it out, because phoenix.js
        1.8 sends its ``authToken`` header on polls only."""
        if not _same(self.session_cookie, made_by.session_cookie):
            return False
        if self.auth_token is None and not polling:
            return True
        return _same(self.auth_token, made_by.auth_token)


@dataclass(frozen=True)
class LongPollRequest:
    method: str
    session_token: str | None
    connect_query: bytes  # the query string the socket's connect hook sees
    origin: str | None
    credentials: Credentials
    request_headers: str  # Access-Control-Request-Headers, for a preflight's answer


def _headers(scope: dict[str, Any]) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for name, value in scope.get("headers", ()):
        found.setdefault(name.lower(), value.decode("latin-1"))
    return found


def read_request(scope: dict[str, Any]) -> LongPollRequest:
    headers = _headers(scope)
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    session_token = headers.get(SESSION_HEADER)
    if session_token is None:
        for index in range(len(pairs) - 1, -1, -1):
            key, value = pairs[index]
            if key == SESSION_PARAM and value.startswith(SESSION_TOKEN_PREFIX):
                session_token = value
                del pairs[index]
                break
    auth_token = headers.get(AUTH_TOKEN_HEADER) or dict(pairs).get(AUTH_TOKEN_PARAM) or None
    connect = [(k, v) for k, v in pairs if not (
        k == AUTH_TOKEN_PARAM or (k == SESSION_PARAM and v.startswith(SESSION_TOKEN_PREFIX)))]
    if auth_token is not None:
        connect = [(SESSION_PARAM, auth_token)] + [(k, v) for k, v in connect
                                                   if k != SESSION_PARAM]
    else:
        auth_token = next((v for k, v in connect if k == SESSION_PARAM and v), None)
    cookie = headers.get(b"cookie")
    session_cookie = parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME) if cookie else None
    return LongPollRequest(
        method=scope.get("method", ""), session_token=session_token,
        connect_query=urlencode(connect).encode(), origin=headers.get(b"origin"),
        credentials=Credentials(_digest(auth_token), _digest(session_cookie)),
        request_headers=headers.get(b"access-control-request-headers", ""))


def cors_headers(origin: str | None) -> list[tuple[bytes, bytes]]:
    """The CORS headers of an answer to a page at ``origin`` (already allowed): phoenix.js
    on another origin can read it. Phoenix sends ``*``; DPS names the origin it allowed."""
    if origin is None:
        return []
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")]


def preflight_headers(request: LongPollRequest) -> list[tuple[bytes, bytes]]:
    """An OPTIONS preflight's answer, as Phoenix's: the requested headers, GET and POST."""
    return cors_headers(request.origin) + [
        (b"access-control-allow-headers", request.request_headers.encode("latin-1")),
        (b"access-control-allow-methods", b"get, post, options"),
        (b"access-control-max-age", b"3600")]


async def respond(send: Callable, status: int, body: dict[str, Any] | None,
                  headers: list[tuple[bytes, bytes]] = ()) -> None:
    content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
        (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": content})


def is_ndjson(scope: dict[str, Any]) -> bool:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/x-ndjson"
    return False


async def read_body(receive: Callable, limit: int) -> bytes | None:
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


def body_lines(body: bytes) -> Iterator[bytes]:
    """The non-empty lines of an ndjson body (``\\n`` or ``\\r\\n``), one at a time: a body of
    a million tiny lines costs what its first few do until the caller stops."""
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
    for match in _LINE.finditer(body):
        yield match.group()


def count_up_to(lines: Iterator[bytes], cap: int) -> int:
    """How many ``lines`` there are, counting no further than ``cap + 1``."""
    count = 0
    for _ in lines:
        count += 1
        if count > cap:
            break
    return count
