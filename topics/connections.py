"""The WebSocket connections this process holds, counted per identity.

An identity is the authenticated user's name, or ``anonymous``. The consumer reports each
accepted socket and each disconnect; the admin and the metrics read the counts.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

ANONYMOUS = "anonymous"
_open: Counter[str] = Counter()


def identity_of(scope: dict[str, Any]) -> str:
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.get_username())
    return ANONYMOUS


def socket_opened(scope: dict[str, Any]) -> str:
    identity = identity_of(scope)
    _open[identity] += 1
    return identity


def socket_closed(identity: str) -> None:
    _open[identity] -= 1
    if _open[identity] <= 0:
        del _open[identity]


def open_sockets_by_identity() -> dict[str, int]:
    """Open sockets of this process per identity."""
    return dict(_open)


def open_sockets() -> int:
    return sum(_open.values())
