"""Who is on the other end of a socket: the value a connect hook returns.

An :class:`Identity` is a user id (a string, whatever the site's user model uses) or
anonymous. Every socket of one identity joins that identity's group, so that
:func:`topics.api.disconnect` reaches them on every WS node with one ``group_send``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ANONYMOUS = "anonymous"
IDENTITY_GROUP_PREFIX = "dps.identity."
# Channels group names allow ASCII letters, digits, hyphens, underscores and periods only.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


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
        return IDENTITY_GROUP_PREFIX + _UNSAFE.sub("_", self.user_id)[:80]


ANONYMOUS_IDENTITY = Identity()


def identity_of(who: Any) -> Identity:
    """An :class:`Identity`, a Django user or a user id, as an :class:`Identity`."""
    if isinstance(who, Identity):
        return who
    if hasattr(who, "pk"):
        return Identity.of_user(who)
    return Identity(str(who))
