"""The per-socket and per-node limits of a WS node, each a named setting (README "Settings").

- ``DPS_MAX_CONNECTIONS``: open sockets per WS node process; past it the handshake gets 503.
- ``DPS_MAX_CONNECTIONS_PER_IDENTITY``: open sockets of one signed-in identity per WS node
  process; past it the handshake gets 429 (anonymous sockets count only towards the node's).
- ``DPS_PUBLISH_RATE`` / ``DPS_PUBLISH_BURST``: a token bucket per socket; a publish past it
  gets the error reason ``rate limited`` and the socket stays open. A rate of 0 turns it off.
- ``DPS_MAX_PAYLOAD_BYTES``: the encoded payload of one publish; larger gets an error reply.
- ``DPS_MAX_TOPICS_PER_SOCKET`` is the protocol's own (``topics.protocol``).
"""
from __future__ import annotations

from django.conf import settings

from topics.hooks.identity import Identity
from topics.transport import connections

DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_CONNECTIONS_PER_IDENTITY = 100
DEFAULT_PUBLISH_RATE = 100.0  # publishes per second per socket
DEFAULT_PUBLISH_BURST = 1000
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024

RATE_LIMITED = "rate limited"
NODE_FULL = 503
IDENTITY_FULL = 429


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def connection_refusal(identity: Identity | None) -> tuple[int, str] | None:
    """The HTTP status and reason that refuse one more socket (of ``identity`` once known;
    None: only the node's limit), or None to admit it."""
    node_limit = _setting("DPS_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)
    if connections.open_sockets() >= node_limit:
        return NODE_FULL, "this node is at DPS_MAX_CONNECTIONS"
    if identity is not None and not identity.is_anonymous:
        limit = _setting("DPS_MAX_CONNECTIONS_PER_IDENTITY", DEFAULT_MAX_CONNECTIONS_PER_IDENTITY)
        if connections.open_sockets_of(identity.name) >= limit:
            return IDENTITY_FULL, "too many sockets for this identity (DPS_MAX_CONNECTIONS_PER_IDENTITY)"
    return None


class PublishBucket:
    """A token bucket: ``burst`` publishes at once, refilled at ``rate`` per second."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend a token for one publish at time ``now``; False when none is left."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1
        return True


def publish_bucket(now: float) -> PublishBucket | None:
    """A socket's publish bucket, or None when ``DPS_PUBLISH_RATE`` is 0 (no limit)."""
    rate = _setting("DPS_PUBLISH_RATE", DEFAULT_PUBLISH_RATE)
    if rate <= 0:
        return None
    return PublishBucket(rate, max(1.0, _setting("DPS_PUBLISH_BURST", DEFAULT_PUBLISH_BURST)), now)


def max_payload_bytes() -> int:
    return int(_setting("DPS_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES))


def payload_too_large(payload: str | bytes, limit: int) -> str | None:
    """Why an encoded (JSON text) or binary payload is refused, or None when it fits."""
    if isinstance(payload, bytes):
        size = len(payload)
    elif len(payload) * 4 <= limit:  # a character is at most 4 bytes: no encode needed
        return None
    else:
        size = len(payload.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return None
    return f"payload too large ({size} bytes, limit {limit})"
