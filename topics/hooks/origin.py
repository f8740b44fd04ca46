"""The browser Origin check of WebSocket handshakes (and long-poll sessions).

A browser names the page that opens a socket in ``Origin``; a page on another site must not
act with the user's session cookie. Origins are compared whole: scheme, host and port
(``https://app.example.com`` is ``https://app.example.com:443``, and neither is
``http://app.example.com`` nor ``https://app.example.com:8443``).

- The handshake's own origin is always allowed: the scheme it came in on (``https`` when
  Django's ``SECURE_PROXY_SSL_HEADER`` says so) and its ``Host``, when that host passes
  ``ALLOWED_HOSTS``.
- With ``DPS_ALLOWED_ORIGINS`` set (full origins; ``*`` opens the check on purpose), so is
  each origin it lists, and no other.
- Unset, so is each literal host of ``ALLOWED_HOSTS`` on the handshake's own scheme and port.
  Patterns (``.example.com``, ``*``) are never widened into origins.

A handshake without Origin (websocat, mobile apps, servers, phoenix.js under Node) is left to
the connect hook. A refused one gets HTTP 403.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http.request import split_domain_port, validate_host

from topics.transport import connections
from topics.transport.handshake import refuse

# What Django itself allows under DEBUG when ALLOWED_HOSTS is empty.
_DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]
_DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]  # scheme, lower-case host (IPv6 in brackets), port


def parse_origin(origin: str) -> Origin | None:
    """``scheme://host[:port]`` as a comparable triple; None for ``null``, other schemes, a
    path or credentials, or anything malformed."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return scheme, host, port or _DEFAULT_PORTS[scheme]


@lru_cache(maxsize=8)
def _configured(entries: tuple[str, ...]) -> frozenset[Origin] | None:
    """``DPS_ALLOWED_ORIGINS`` parsed (None: ``*``); a malformed entry is a setup error."""
    if "*" in entries:
        return None
    parsed = set()
    for entry in entries:
        origin = parse_origin(entry)
        if origin is None:
            raise ImproperlyConfigured(
                f"DPS_ALLOWED_ORIGINS has {entry!r}, which is not an origin such as "
                "https://app.example.com (scheme, host and an optional port; or '*')")
        parsed.add(origin)
    return frozenset(parsed)


def configured_origins() -> frozenset[Origin] | None:
    """The origins ``DPS_ALLOWED_ORIGINS`` lists (empty: unset; None: ``*``)."""
    return _configured(tuple(getattr(settings, "DPS_ALLOWED_ORIGINS", None) or ()))


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _request_scheme(scope: dict[str, Any]) -> str:
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure_value = proxy  # Django's META name, e.g. HTTP_X_FORWARDED_PROTO
        header = name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1")
        value = _header(scope, header)
        if value is not None:
            return "https" if value.split(",")[0].strip() == secure_value else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def _allowed_hosts() -> list[str]:
    return list(settings.ALLOWED_HOSTS) or (_DEBUG_HOSTS if settings.DEBUG else [])


def request_origin(scope: dict[str, Any]) -> Origin | None:
    """The handshake's own origin: its scheme and ``Host``, when that host passes
    ``ALLOWED_HOSTS`` (else None)."""
    scheme = _request_scheme(scope)
    domain, port_text = split_domain_port((_header(scope, b"host") or "").lower())
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    if port_text and not port_text.isdigit():
        return None
    if ":" in domain and not domain.startswith("["):
        domain = f"[{domain}]"
    return scheme, domain, int(port_text) if port_text else _DEFAULT_PORTS[scheme]


def origin_allowed(origin: str, scope: dict[str, Any]) -> bool:
    """Whether a handshake (``scope``) from a page at ``origin`` may proceed: its own origin
    always, then ``DPS_ALLOWED_ORIGINS``, or by default the literal ``ALLOWED_HOSTS`` on the
    handshake's own scheme and port."""
    configured = configured_origins()
    if configured is None:
        return True  # "*": on purpose
    parsed = parse_origin(origin)
    if parsed is None:
        return False  # "null" (sandboxed pages, file:) and other schemes
    own = request_origin(scope)
    if parsed == own or parsed in configured:
        return True
    if configured or own is None:
        return False
    scheme, host, port = parsed
    return (scheme, port) == own[::2] and host in {
        h.lower() for h in _allowed_hosts() if h != "*" and not h.startswith(".")}


class OriginCheck:
    """ASGI middleware: a WebSocket handshake from a foreign origin is refused (403)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        configured_origins()  # a malformed DPS_ALLOWED_ORIGINS stops the node at start

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            origin = _header(scope, b"origin")
            if origin is not None and not origin_allowed(origin, scope):
                connections.count_refusal("origin")
                await receive()  # the websocket.connect message
                await refuse(scope, send, 403, f"origin {origin[:200]!r} is not allowed")
                return
        await self.app(scope, receive, send)
