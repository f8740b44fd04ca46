"""The socket side of presence and recovery: which topics track presence, what a socket is
tracked as, and what a join asks its topic's owner (``DPSChannelLayer.group_join``).

- ``DPS_PRESENCE``: topic patterns (``fnmatch``, ``"rooms:*"``) whose members are tracked. A
  socket is tracked under its user's primary key when the connection has an authenticated
  ``scope["user"]``, else under a key of its own (``anon-`` and 12 hex digits, one per
  socket), with the meta ``{"online_at": unix seconds, "name": ...}``; ``name`` is the user's
  name, or for an anonymous socket the join payload's ``name`` (at most
  ``DPS_PRESENCE_NAME_CHARS`` characters, control characters removed).
- A presence update (``topics.api.presence_update``) re-tracks a socket with a new meta
  (:func:`updated`).
- History is the layer's (``history`` patterns by group, at the owner); a join on such a
  topic may ask ``{"recover": {"offset": N, "epoch": "E"}}`` and ``{"offsets": true}``.
"""
from __future__ import annotations

import fnmatch
import os
import time
import unicodedata
from functools import lru_cache
from typing import Any

from django.conf import settings

DEFAULT_NAME_CHARS = 32


@lru_cache(maxsize=4096)
def _tracked(topic: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(topic, p) for p in patterns)


def tracks_presence(topic: str) -> bool:
    return _tracked(topic, tuple(getattr(settings, "DPS_PRESENCE", ())))


def _clean_name(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    limit = int(getattr(settings, "DPS_PRESENCE_NAME_CHARS", DEFAULT_NAME_CHARS))
    text = "".join(c for c in value if unicodedata.category(c)[0] != "C").strip()
    return text[:limit] or None


def presence_key(scope: dict, socket_key: str,
                 user_id: str | None = None) -> tuple[str, str | None]:
    """(key, name) of a socket: its identity's (the connect hook's user id), its session
    user's, or its own when anonymous."""
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        if user_id is None or str(user.pk) == user_id:
            return str(user.pk), user.get_username()
    if user_id is not None:
        return user_id, None
    return socket_key, None


def new_socket_key() -> str:
    return "anon-" + os.urandom(6).hex()


def new_ref() -> str:
    return os.urandom(8).hex()


def track(scope: dict, socket_key: str, payload: Any, user_id: str | None = None) -> list:
    """``[key, phx_ref, meta]`` for a join of this socket."""
    key, name = presence_key(scope, socket_key, user_id)
    if name is None and isinstance(payload, dict):
        name = _clean_name(payload.get("name"))
    meta: dict[str, Any] = {"online_at": int(time.time())}
    if name is not None:
        meta["name"] = name
    return [key, new_ref(), meta]


def updated(track: list, meta: dict[str, Any]) -> list:
    """The track replacing ``track`` (``[key, phx_ref, meta]``) in a presence update, as
    Phoenix's ``Presence.update``: a new ``phx_ref``, ``meta`` in place of the old meta (DPS's
    own ``online_at`` and ``name`` stay unless ``meta`` gives them), and ``phx_ref_prev``
    naming the old ref, which is how the owner knows to replace that track in one step."""
    key, ref, old = track
    kept = {name: old[name] for name in ("online_at", "name") if name in old}
    return [key, new_ref(), {**kept, **meta, "phx_ref_prev": ref}]


def recover_request(payload: Any) -> list | None:
    """``[offset, epoch]`` from a join payload's ``recover``, None if absent or malformed."""
    recover = payload.get("recover") if isinstance(payload, dict) else None
    if not isinstance(recover, dict):
        return None
    offset, epoch = recover.get("offset"), recover.get("epoch")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 \
            or not isinstance(epoch, str) or len(epoch) > 64:
        return None
    return [offset, epoch]


def wants_offsets(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("offsets") is True


def position_ref(position: list) -> str:
    """A broadcast's ``[offset, epoch]`` as the frame's ref: ``"EPOCH:OFFSET"`` (never a
    number, so it cannot be taken for the reply to one of the client's own pushes)."""
    return f"{position[1]}:{position[0]}"
