"""Which topics exist, and the Channels group that carries each one."""
from __future__ import annotations

import re

PREFIX = "topics:"
# ``fullmatch`` with explicit ASCII classes: ``^...$`` would accept a trailing newline and
# ``\w`` would accept non-ASCII letters.
_NAME = re.compile(r"[A-Za-z0-9]{2,64}", re.ASCII)
# A site topic's group (":" → ".") must be a valid Channels group name (under 100 characters).
_SITE_TOPIC = re.compile(r"[A-Za-z0-9_.-]{1,30}:[A-Za-z0-9_.-]{1,64}", re.ASCII)
INVALID_NAME = ("invalid topic name, must be between 2 and 64 characters long "
                "and only contain alphanumeric characters")


def is_topics_topic(topic: str, namespaces: tuple[str, ...] = (PREFIX,)) -> bool:
    """Whether ``topic`` is in a namespace a client may join (``topics:`` by default)."""
    return topic.startswith(namespaces)


def is_valid_topic(topic: str, namespaces: tuple[str, ...] = (PREFIX,)) -> bool:
    """Whether ``topic`` is ``NAMESPACE:NAME`` with NAME 2–64 ASCII letters or digits."""
    colon = topic.find(":") + 1
    return (colon > 0 and topic[:colon] in namespaces
            and _NAME.fullmatch(topic, colon) is not None)


def is_valid_site_topic(topic: str) -> bool:
    """Whether a topic of a site's own namespace (``rooms:NAME``, served by a handler of
    ``DPS_TOPICS``) makes a valid Channels group name."""
    return _SITE_TOPIC.fullmatch(topic) is not None


def group_for_topic(topic: str) -> str:
    """The Channels group for a valid topic: ``topics:matrix`` → ``topics.matrix``
    (Channels group names may not contain ``:``)."""
    return topic.replace(":", ".", 1)


def topic_for_group(group: str) -> str:
    """The topic a group carries: ``rooms.lobby`` → ``rooms:lobby``."""
    return group.replace(".", ":", 1)
