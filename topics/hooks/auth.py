"""Who may open a socket: Phoenix's ``connect/3`` in Django's idiom.

A connect hook (``DPS_CONNECT``, a dotted path; sync or async) takes the connect params (the
query string, which is where phoenix.js puts ``params``) and the ASGI scope (with ``user`` and
``session`` from Channels' ``AuthMiddlewareStack``, headers, client address) and returns an
:class:`~topics.hooks.identity.Identity`, or None to refuse. :func:`default_connect` accepts

- a signed, expiring token from :func:`issue_token` (``?token=...``): it names a user;
- a logged-in Django session (same-origin pages);
- otherwise an anonymous socket, which :func:`authenticate` lets through only when
  ``DPS_ALLOW_ANONYMOUS`` is on.

Tokens are stateless (Django's ``signing`` with :data:`TOKEN_SALT` and ``SECRET_KEY``): checking
one costs no database query; they stay valid until they expire, so keep ``ttl`` short and use
:func:`topics.api.disconnect` to end what a token opened.
"""
from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async
from django.conf import settings
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from topics.hooks.identity import ANONYMOUS_IDENTITY, Identity

logger = logging.getLogger(__name__)

TOKEN_SALT = "dps.socket-token"
DEFAULT_TOKEN_TTL = 3600.0
DEFAULT_CONNECT = "topics.hooks.auth.default_connect"
TOKEN_PARAM = "token"

ConnectHook = Callable[[dict[str, str], dict[str, Any]], Awaitable[Identity | None]]


def check_secret_key() -> None:
    """Refuse to serve (or sign) with a SECRET_KEY the settings call insecure: the public
    development key with DEBUG off (``DPS_INSECURE_SECRET_KEY``)."""
    if getattr(settings, "DPS_INSECURE_SECRET_KEY", False):
        raise ImproperlyConfigured(
            "DEBUG is off and DJANGO_SECRET_KEY is not set: refusing to run with the development "
            "SECRET_KEY, which anyone can read in this repository and which signs sessions and "
            "DPS socket tokens. Set DJANGO_SECRET_KEY to a long random value (or DJANGO_DEBUG=1 "
            "for development).")


def issue_token(user: Any, ttl: float | None = None) -> str:
    """A token that identifies ``user`` (a Django user) to the default connect hook for
    ``ttl`` seconds (``DPS_TOKEN_TTL``, 1 hour, by default)."""
    check_secret_key()
    if ttl is None:
        ttl = float(getattr(settings, "DPS_TOKEN_TTL", DEFAULT_TOKEN_TTL))
    if ttl <= 0:
        raise ValueError("a token's ttl must be positive")
    return signing.dumps({"u": str(user.pk), "exp": time.time() + ttl}, salt=TOKEN_SALT)


def verify_token(token: str) -> Identity | None:
    """The identity a token names, or None when it is tampered with, malformed or expired."""
    try:
        data = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), str):
        return None
    expires = data.get("exp")
    if not isinstance(expires, (int, float)) or expires < time.time():
        return None
    return Identity(data["u"])


async def default_connect(params: dict[str, str], scope: dict[str, Any]) -> Identity | None:
    """A token if one is given (a bad one refuses), else the session's user, else anonymous."""
    token = params.get(TOKEN_PARAM)
    if token is not None:
        return verify_token(token)
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        return Identity.of_user(user)
    return ANONYMOUS_IDENTITY


def connect_params(scope: dict[str, Any]) -> dict[str, str]:
    """The connect params: the query string's fields, the first value of each."""
    params: dict[str, str] = {}
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, value)
    return params


@lru_cache(maxsize=8)
def _connect_hook(path: str) -> ConnectHook:
    hook = import_string(path)
    if inspect.iscoroutinefunction(hook):
        return hook
    return database_sync_to_async(hook)  # a sync hook may use the ORM: run it off the loop


def connect_hook() -> ConnectHook:
    """The connect hook named by ``DPS_CONNECT``, as a coroutine function."""
    return _connect_hook(getattr(settings, "DPS_CONNECT", DEFAULT_CONNECT))


def anonymous_allowed() -> bool:
    return bool(getattr(settings, "DPS_ALLOW_ANONYMOUS", False))


async def authenticate(scope: dict[str, Any], params: dict[str, str]) -> Identity | None:
    """The identity of a connecting socket, or None when it must be refused. A hook that
    raises refuses the socket (its traceback is logged once)."""
    try:
        identity = await connect_hook()(params, scope)
    except Exception:
        logger.exception("the connect hook raised; the socket is refused")
        return None
    if identity is None:
        return None
    if not isinstance(identity, Identity):
        logger.error("the connect hook returned %s, not an Identity or None; the socket is "
                     "refused", type(identity).__name__)
        return None
    if identity.is_anonymous and not anonymous_allowed():
        return None
    return identity


def announce_anonymous() -> None:
    """Say at startup when anonymous sockets are allowed (runcluster, runserver)."""
    if anonymous_allowed():
        logger.warning("DPS_ALLOW_ANONYMOUS is on: sockets without a token or a session are "
                       "accepted (set DPS_ALLOW_ANONYMOUS=0 to refuse them)")
