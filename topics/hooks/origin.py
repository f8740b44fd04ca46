"""The browser Origin check of WebSocket handshakes.

A browser names the page that opens a socket in ``Origin``; a page on another site must not
act with the user's session cookie. The origin's host is checked against ``ALLOWED_HOSTS``
(Django's own patterns; under DEBUG with none set, Django's local defaults), or, when set,
the origin must be one of ``DPS_ALLOWED_ORIGINS`` (full origins such as
``https://app.example.com``, or ``*``). A handshake without Origin (websocat, mobile apps,
servers) is left to the connect hook. A refused one gets HTTP 403.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host

from topics.transport import connections
from topics.transport.handshake import refuse

# What Django itself allows under DEBUG when ALLOWED_HOSTS is empty.
_DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]


def origin_allowed(origin: str) -> bool:
    allowed_origins = getattr(settings, "DPS_ALLOWED_ORIGINS", None)
    if allowed_origins:
        return "*" in allowed_origins or origin.rstrip("/") in allowed_origins
    try:
        parts = urlsplit(origin)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.scheme not in ("http", "https"):
        return False  # "null" (sandboxed pages, file:) and other schemes
    if ":" in host:
        host = f"[{host}]"
    hosts = list(settings.ALLOWED_HOSTS) or (_DEBUG_HOSTS if settings.DEBUG else [])
    return validate_host(host, hosts)


def _origin_header(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            return value.decode("latin-1")
    return None


class OriginCheck:
    """ASGI middleware: a WebSocket handshake from a foreign origin is refused (403)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            origin = _origin_header(scope)
            if origin is not None and not origin_allowed(origin):
                connections.count_refusal("origin")
                await receive()  # the websocket.connect message
                await refuse(scope, send, 403, f"origin {origin[:200]!r} is not allowed")
                return
        await self.app(scope, receive, send)
