"""Topic handlers: what a join or a publish means on a site's own topics (Phoenix's channel
modules, in Django's idiom).

``DPS_TOPICS`` maps topic patterns (``fnmatch``: ``"rooms:*"``) to handler classes (dotted
paths); the first matching pattern, in the setting's order, wins; a topic no pattern matches
gets ``unmatched topic``. A handler class has any of::

    join(socket, topic, payload)      accept: return None or a response dict;
                                      refuse: raise Refuse(reason) (default "unauthorized")
    handle_in(socket, event, payload) a client publish: return None (broadcast it as is),
                                      Broadcast(payload, event=None) (broadcast this instead),
                                      Reply(response) (answer the publisher only), or Refuse
    leave(socket, topic)              the socket left the topic (or went away)
    client_events = True              a class attribute: every event a client pushes on the
                                      topic (``channel.push("new_msg", {...})``, Phoenix's
                                      idiom) goes to handle_in like a publish; without it only
                                      ``publish`` with ``[event, payload]`` does (the seed's
                                      convention, kept by ``topics:*``)

docs/handlers.md has the whole contract with examples.

Each method may be sync (it runs off the event loop, so it may use the ORM) or async. One
instance per join: it may keep per-join state on ``self``; per-socket state goes in
``socket.assigns``. A method that raises anything but :class:`Refuse`, or returns something
that is not one of its documented results, crashes that join's channel, as in Phoenix: a
``join`` is answered ``{"reason": "join crashed"}``; a ``handle_in`` leaves the topic and sends
the client ``phx_error``, on which phoenix.js fires ``onError`` and rejoins. The consumer
counts it (``channel_crashes``) and logs its traceback (rate-limited).

Handlers run on the publisher's WS node only (join and handle_in), before the layer: the
fan-out path (one encode per node, direct frames) is the same for every handler, and a method a
class does not override costs nothing.
"""
from __future__ import annotations

import fnmatch
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils.module_loading import import_string

from topics.hooks.identity import Identity
from topics.protocol import publish_error
from topics.protocol.message import dumps

DEFAULT_TOPICS = {"topics:*": "topics.hooks.handlers.SeedTopic"}
UNAUTHORIZED = "unauthorized"


class Refuse(Exception):
    """Raise (or return) from ``join`` or ``handle_in`` to refuse, with a reason for the client."""

    def __init__(self, reason: str = UNAUTHORIZED) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Broadcast ``payload`` (a JSON object) instead of what the client published."""

    payload: dict[str, Any]
    event: str | None = None  # None: the client's event


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the publisher with ``response``; broadcast nothing."""

    response: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SocketContext:
    """What a handler knows about the socket: who (``identity``), the connect ``params``, the
    ASGI ``scope`` (``scope["user"]`` with the auth middleware), and ``assigns`` for its own
    per-socket state."""

    identity: Identity
    params: dict[str, str]
    scope: dict[str, Any]
    assigns: dict[str, Any] = field(default_factory=dict)


class TopicHandler:
    """The base class: joins are accepted, publishes broadcast unchanged."""

    # True: any client event (not only ``publish``) is a publish of that event, for handle_in.
    client_events: bool = False

    def join(self, socket: SocketContext, topic: str, payload: Any) -> dict[str, Any] | None:
        return None

    def handle_in(self, socket: SocketContext, event: str,
                  payload: dict[str, Any]) -> Broadcast | Reply | None:
        return None

    def leave(self, socket: SocketContext, topic: str) -> None:
        return None


class SeedTopic(TopicHandler):
    """``topics:NAME``, as the seed has it: anyone joined may publish anything valid."""


# --- what the consumer gets back ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


@dataclass(frozen=True, slots=True)
class Crashed:
    """The method raised (``error``) or returned something it may not (``error`` is None)."""

    handler: str  # the handler's class name and method, for the log
    error: BaseException | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Publishing:
    """Broadcast this: ``payload`` the encoded JSON text, or a binary payload's bytes."""

    event: str
    payload: str | bytes


ACCEPTED = Accepted({})


def _as_coroutine_function(method: Callable) -> Callable[..., Awaitable[Any]]:
    if inspect.iscoroutinefunction(method):
        return method
    return database_sync_to_async(method)


@lru_cache(maxsize=256)
def _overridden(cls: type) -> tuple[bool, bool, bool]:
    """Which of join, handle_in, leave ``cls`` defines itself (once per class, not per join)."""
    return tuple(getattr(cls, name) is not getattr(TopicHandler, name)
                 for name in ("join", "handle_in", "leave"))


class BoundHandler:
    """One join's handler instance, with each method it overrides as a coroutine function
    (None for those it does not: the consumer skips them)."""

    __slots__ = ("handler", "join", "handle_in", "leave")

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        joins, handles_in, leaves = _overridden(type(handler))
        self.join = _bind(handler, "join") if joins else None
        self.handle_in = _bind(handler, "handle_in") if handles_in else None
        self.leave = _bind(handler, "leave") if leaves else None

    @property
    def passthrough(self) -> bool:
        """Nothing to run at all (the seed's handler)."""
        return self.join is None and self.handle_in is None and self.leave is None

    async def run_join(self, socket: SocketContext, topic: str,
                       payload: Any) -> Accepted | Refused | Crashed:
        if self.join is None:
            return ACCEPTED
        outcome = await self._call("join", self.join, socket, topic, payload)
        if isinstance(outcome, Refused | Crashed):
            return outcome
        if outcome is None or outcome is True:
            return ACCEPTED
        if outcome is False:
            return Refused(UNAUTHORIZED)
        if isinstance(outcome, dict):
            return Accepted(outcome)
        return self._bad_result("join", outcome)

    async def run_handle_in(self, socket: SocketContext, event: str,
                            payload: str | bytes) -> Publishing | Reply | Refused | Crashed:
        """``payload``: a publish's JSON text (the method gets the decoded object) or a binary
        push's bytes (the method gets them as they are)."""
        if self.handle_in is None:
            return Publishing(event, payload)
        decoded = payload if isinstance(payload, bytes) else json.loads(payload)
        outcome = await self._call("handle_in", self.handle_in, socket, event, decoded)
        if isinstance(outcome, Refused | Reply | Crashed):
            return outcome
        if outcome is None:
            return Publishing(event, payload)
        # What a handler broadcasts obeys the clients' rules: a JSON object, no phx_ event.
        if isinstance(outcome, Broadcast) and publish_error(
                [outcome.event or event, outcome.payload]) is None:
            try:
                return Publishing(outcome.event or event, dumps(outcome.payload))
            except (TypeError, ValueError, RecursionError) as exc:
                return Crashed(self._name("handle_in"), exc, "broadcast a payload that is not JSON")
        return self._bad_result("handle_in", outcome)

    async def run_leave(self, socket: SocketContext, topic: str) -> Crashed | None:
        if self.leave is not None:
            outcome = await self._call("leave", self.leave, socket, topic)
            if isinstance(outcome, Crashed):
                return outcome
        return None

    async def _call(self, name: str, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        try:
            outcome = await method(*args)
        except Refuse as refusal:
            return Refused(str(refusal.reason))
        except Exception as exc:
            return Crashed(self._name(name), exc)
        if isinstance(outcome, Refuse):
            return Refused(str(outcome.reason))
        return outcome

    def _name(self, method: str) -> str:
        return f"{type(self.handler).__name__}.{method}"

    def _bad_result(self, method: str, outcome: Any) -> Crashed:
        return Crashed(self._name(method), None,
                       f"returned {type(outcome).__name__}, which is not one of its results")


def _bind(handler: Any, name: str) -> Callable[..., Awaitable[Any]]:
    return _as_coroutine_function(getattr(handler, name))


class TopicRoutes:
    """``DPS_TOPICS`` resolved: which handler class serves a topic."""

    def __init__(self, patterns: dict[str, str | type]) -> None:
        self._routes = [(pattern, import_string(cls) if isinstance(cls, str) else cls)
                        for pattern, cls in patterns.items()]
        self.handler_class = lru_cache(maxsize=4096)(self._match)

    def _match(self, topic: str) -> type | None:
        for pattern, cls in self._routes:
            if fnmatch.fnmatchcase(topic, pattern):
                return cls
        return None

    def routes(self, topic: str) -> bool:
        """Whether some pattern serves ``topic`` (else: ``unmatched topic``)."""
        return self.handler_class(topic) is not None

    def client_events(self, topic: str) -> bool:
        """Whether ``topic``'s handler takes any client event (``TopicHandler.client_events``)."""
        return bool(getattr(self.handler_class(topic), "client_events", False))

    def bind(self, topic: str) -> BoundHandler | None:
        """A new handler for one join of ``topic`` (None when no pattern serves it)."""
        cls = self.handler_class(topic)
        return None if cls is None else BoundHandler(cls())


_resolved: tuple[Any, TopicRoutes] | None = None


def topic_routes() -> TopicRoutes:
    """The routes of the current ``DPS_TOPICS`` (rebuilt when the setting object changes, as
    under ``override_settings``)."""
    global _resolved
    patterns = getattr(settings, "DPS_TOPICS", None) or DEFAULT_TOPICS
    if _resolved is None or _resolved[0] is not patterns:
        _resolved = (patterns, TopicRoutes(patterns))
    return _resolved[1]
