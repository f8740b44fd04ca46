"""The per-socket and per-node limits of a WS node, each a named setting (README "Settings").

- ``DPS_MAX_CONNECTIONS``: open sockets per WS node process; past it the handshake gets 503.
- ``DPS_MAX_CONNECTIONS_PER_IDENTITY``: open sockets of one signed-in identity per WS node
  process; past it the handshake gets 429 (anonymous sockets count only towards the node's).
  Per node, not per cluster: an identity may hold this many sockets on each WS node (counting
  cluster-wide would put a Redis round trip in every handshake).
- ``DPS_PUBLISH_RATE`` / ``DPS_PUBLISH_BURST``: a token bucket per signed-in identity per WS
  node process, shared by all its sockets there and kept across reconnects (a new socket does
  not get a full bucket); a publish past it gets the error reason ``rate limited`` and the
  socket stays open. A rate of 0 turns it off. An anonymous socket has a bucket of its own: an
  address is not an identity (behind a NAT or a proxy that does not forward the client's address,
  every anonymous client shares one, and one of them would starve the rest), so anonymous
  publishers, which production nodes refuse by default, are limited per connection (and by
  ``DPS_MAX_CONNECTIONS``). Buckets of identities that have refilled are dropped (a full bucket
  is what a new one is), so the memory is bounded by the identities that published in the last
  ``DPS_PUBLISH_BURST / DPS_PUBLISH_RATE`` seconds.
- ``DPS_MAX_PAYLOAD_BYTES``: the encoded payload of one publish; larger gets an error reply.
- ``DPS_MAX_TOPICS_PER_SOCKET`` is the protocol's own (``topics.protocol``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings

from topics.hooks.identity import Identity
from topics.transport import connections

DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_CONNECTIONS_PER_IDENTITY = 100
DEFAULT_PUBLISH_RATE = 100.0  # publishes per second per identity (anonymous: per socket)
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


    def refilled(self, now: float) -> bool:
        """Whether the bucket is full again at ``now`` (no different from a new one)."""
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


class IdentityBuckets:
    """The publish buckets of the signed-in identities of this node, by identity name.

    A bucket that has refilled is dropped at the next sweep, which runs at most once per
    refill time (``burst / rate``) and only when a bucket is made, so the publish path is a dict
    lookup and the table holds only identities that published recently.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, PublishBucket] = {}
        self._sweep_every = burst / rate
        self._next_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, name: str, now: float) -> bool:
        """Spend a token of identity ``name`` for one publish at ``now``; False when none is left."""
        bucket = self._buckets.get(name)
        if bucket is None:
            if now >= self._next_sweep:
                self.sweep(now)
            bucket = self._buckets[name] = PublishBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def sweep(self, now: float) -> None:
        """Drop the buckets that have refilled by ``now``."""
        self._buckets = {name: bucket for name, bucket in self._buckets.items()
                         if not bucket.refilled(now)}
        self._next_sweep = now + self._sweep_every


_identity_buckets: IdentityBuckets | None = None


def identity_buckets(rate: float, burst: float) -> IdentityBuckets:
    """This node's buckets for the current rate and burst (a new table when they change, as
    under ``override_settings``)."""
    global _identity_buckets
    table = _identity_buckets
    if table is None or (table.rate, table.burst) != (rate, burst):
        table = _identity_buckets = IdentityBuckets(rate, burst)
    return table


PublishGate = Callable[[float], bool]


def publish_gate(identity: Identity, now: float) -> PublishGate | None:
    """What a socket of ``identity`` asks before each publish (``gate(now)``: False means rate
    limited), or None when ``DPS_PUBLISH_RATE`` is 0 (no limit)."""
    rate = _setting("DPS_PUBLISH_RATE", DEFAULT_PUBLISH_RATE)
    if rate <= 0:
        return None
    burst = max(1.0, _setting("DPS_PUBLISH_BURST", DEFAULT_PUBLISH_BURST))
    if identity.is_anonymous:
        return PublishBucket(rate, burst, now).take
    return functools.partial(identity_buckets(rate, burst).take, identity.name)


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
