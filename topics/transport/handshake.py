"""The answer to a WebSocket handshake: accepting it (:func:`accept_message`), or refusing it
with a chosen HTTP status (403, 429, 503).

Accepting: a client that offers the ``phoenix`` subprotocol (phoenix.js with ``authToken``
offers it next to the token's own) gets exactly that one back, as Phoenix answers; the
token's subprotocol is never echoed. A client that offers none gets none.

Refusing: ASGI's "WebSocket Denial Response" extension (``websocket.http.response``) lets an application
answer the upgrade request with any HTTP response; uvicorn implements it. A close before accept
is the portable fallback, which every server answers with 403. daphne does not implement the
extension: ``topics.adapters.daphne_denial`` teaches it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from topics.transport.log_limits import LineLimiter, held_back

DENIAL_EXTENSION = "websocket.http.response"
PHOENIX_SUBPROTOCOL = "phoenix"
REFUSAL_LOG_INTERVAL = 10.0  # seconds: at most one line per status and reason in this time

logger = logging.getLogger(__name__)


class RefusalLog:
    """One log line per refused handshake, with its status, reason and client, at most one
    per (status, reason) each ``interval`` seconds; the next line says how many were not
    logged meanwhile (a flood of refusals must not flood the log)."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lines = LineLimiter(interval, clock)

    def refused(self, status: int, reason: str, scope: dict[str, Any]) -> None:
        quiet = self._lines.admit((status, reason))
        if quiet is None:
            return
        client = scope.get("client") or ("?", 0)
        logger.warning("refused a socket from %s: %d %s%s", client[0], status,
                       reason or "refused", held_back(quiet))


REFUSALS = RefusalLog()


def accept_message(scope: dict[str, Any]) -> dict[str, Any]:
    """The ASGI ``websocket.accept`` for this handshake (with the ``phoenix`` subprotocol
    when the client offered it)."""
    if PHOENIX_SUBPROTOCOL in (scope.get("subprotocols") or ()):
        return {"type": "websocket.accept", "subprotocol": PHOENIX_SUBPROTOCOL}
    return {"type": "websocket.accept"}


def supports_denial_response(scope: dict[str, Any]) -> bool:
    return DENIAL_EXTENSION in (scope.get("extensions") or {})


async def refuse(scope: dict[str, Any], send: Callable[[dict], Awaitable[None]],
                 status: int = 403, reason: str = "") -> None:
    """Refuse the handshake: HTTP ``status`` with ``reason`` as a plain-text body where the
    server supports it, else the close-before-accept that servers answer with 403. Logged
    (rate-limited) with its reason, so that a refused client can be explained."""
    REFUSALS.refused(status, reason, scope)
    if status == 403 or not supports_denial_response(scope):
        await send({"type": "websocket.close"})
        return
    body = reason.encode()
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})
