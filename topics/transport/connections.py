"""The WebSocket connections this process holds, counted per identity: what the connection
limits read, and what the admin and the metrics (topics.operator.node_report) publish.

An identity is an :attr:`Identity.name <topics.hooks.identity.Identity.name>`: ``user:<id>`` or
``anonymous``. The consumer registers each admitted socket and unregisters it when it goes;
refused handshakes are counted by reason. Touched from the server's event loop only, so it
needs no lock.
"""
from __future__ import annotations

from collections import Counter

_open: Counter[str] = Counter()
_total = 0
# Handshakes refused, by reason ("origin", "unauthenticated", the limit that refused it).
_refused: Counter[str] = Counter()


def register(identity_name: str) -> None:
    """A socket of ``identity_name`` was admitted."""
    global _total
    _open[identity_name] += 1
    _total += 1


def unregister(identity_name: str) -> None:
    """A registered socket of ``identity_name`` went away."""
    global _total
    if identity_name not in _open:
        return
    _total -= 1
    left = _open[identity_name] - 1
    if left > 0:
        _open[identity_name] = left
    else:
        del _open[identity_name]


def count_refusal(reason: str) -> None:
    _refused[reason] += 1


def open_sockets_by_identity() -> dict[str, int]:
    """Open sockets of this process per identity name."""
    return dict(_open)


def open_sockets_of(identity_name: str) -> int:
    return _open.get(identity_name, 0)


def open_sockets() -> int:
    """Open sockets of this process in all."""
    return _total


def refused_handshakes() -> dict[str, int]:
    """Handshakes this process refused, per reason."""
    return dict(_refused)
