"""Who is on the other end of a socket: the value a connect hook returns.

An :class:`Identity` is a user id (a string, whatever the site's user model uses) or
anonymous. Every socket of one identity joins that identity's group, so that
:func:`topics.api.disconnect` reaches them on every WS node with one ``group_send``.

The group's name is ``dps.identity.<readable>.<hash>``: ``<readable>`` is the id with what a
Channels group name cannot hold replaced, and cut short (for people reading the admin); the
hash (BLAKE2b of the whole id) is what tells identities apart, so ``a@b`` and ``a_b``, or two
long ids sharing their first characters, never share a group.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

ANONYMOUS = "anonymous"
IDENTITY_GROUP_PREFIX = "dps.identity."
# Channels group names allow ASCII letters, digits, hyphens, underscores and periods only.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_READABLE_CHARS = 40  # of the id, in the group's name; with the prefix and hash, under Channels' 100
_HASH_BYTES = 16  # 32 hex digits: collisions are out of reach for any user table


@dataclass(frozen=True, slots=True)
class Identity:
    """A connected party: ``user_id`` None means anonymous."""

    user_id: str | None = None

    @classmethod
    def of_user(cls, user: Any) -> Identity:
        """The identity of a Django user (its primary key)."""
        return cls(str(user.pk))

    @property
    def is_anonymous(self) -> bool:
        return self.user_id is None

    @property
    def name(self) -> str:
        """How the identity is counted and shown: ``user:<id>`` or ``anonymous``."""
        return ANONYMOUS if self.user_id is None else f"user:{self.user_id}"

    @property
    def group(self) -> str | None:
        """The Channels group every socket of this identity joins (None for anonymous: there
        is no one to disconnect by name)."""
        if self.user_id is None:
            return None
        digest = hashlib.blake2b(self.user_id.encode("utf-8", "surrogatepass"),
                                 digest_size=_HASH_BYTES).hexdigest()
        readable = _UNSAFE.sub("_", self.user_id)[:_READABLE_CHARS]
        return f"{IDENTITY_GROUP_PREFIX}{readable}.{digest}"


ANONYMOUS_IDENTITY = Identity()


def identity_of(who: Any) -> Identity:
    """An :class:`Identity`, a Django user or a user id, as an :class:`Identity`."""
    if isinstance(who, Identity):
        return who
    if hasattr(who, "pk"):
        return Identity.of_user(who)
    return Identity(str(who))
