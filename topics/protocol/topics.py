"""Which topics exist, and the Channels group that carries each one."""
from __future__ import annotations

import re

PREFIX = "topics:"
# ``fullmatch`` with explicit ASCII classes: ``^...$`` would accept a trailing newline and
# ``\w`` would accept non-ASCII letters.
_NAME = re.compile(r"[A-Za-z0-9]{2,64}", re.ASCII)
INVALID_NAME = ("invalid topic name, must be between 2 and 64 characters long "
                "and only contain alphanumeric characters")


def is_topics_topic(topic: str) -> bool:
    """Whether ``topic`` is in the ``topics:`` namespace, the only one a client may join."""
    return topic.startswith(PREFIX)


def is_valid_topic(topic: str) -> bool:
    """Whether ``topic`` is ``topics:NAME`` with NAME 2–64 ASCII letters or digits."""
    return is_topics_topic(topic) and _NAME.fullmatch(topic, len(PREFIX)) is not None


def group_for_topic(topic: str) -> str:
    """The Channels group for a valid topic: ``topics:matrix`` → ``topics.matrix``
    (Channels group names may not contain ``:``)."""
    return topic.replace(":", ".", 1)
