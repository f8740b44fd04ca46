"""Refusing a WebSocket handshake with a chosen HTTP status (403, 429, 503).

ASGI's "WebSocket Denial Response" extension (``websocket.http.response``) lets an application
answer the upgrade request with any HTTP response; uvicorn implements it. A close before accept
is the portable fallback, which every server answers with 403. daphne does not implement the
extension: ``topics.adapters.daphne_denial`` teaches it.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

DENIAL_EXTENSION = "websocket.http.response"


def supports_denial_response(scope: dict[str, Any]) -> bool:
    return DENIAL_EXTENSION in (scope.get("extensions") or {})


async def refuse(scope: dict[str, Any], send: Callable[[dict], Awaitable[None]],
                 status: int = 403, reason: str = "") -> None:
    """Refuse the handshake: HTTP ``status`` with ``reason`` as a plain-text body where the
    server supports it, else the close-before-accept that servers answer with 403."""
    if status == 403 or not supports_denial_response(scope):
        await send({"type": "websocket.close"})
        return
    body = reason.encode()
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})
