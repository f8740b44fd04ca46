"""Who may open a socket: Phoenix's ``connect/3`` in Django's idiom.

A connect hook (``DPS_CONNECT``, a dotted path; sync or async) takes the connect params (the
query string, which is where phoenix.js puts ``params``) and the ASGI scope (with ``user`` and
``session`` from Channels' ``AuthMiddlewareStack``, headers, client address) and returns an
:class:`~topics.hooks.identity.Identity`, or None to refuse. :func:`default_connect` accepts

- a signed, expiring token from :func:`issue_token`: it names a user. It comes as
  ``?token=...``, or as phoenix.js's ``authToken`` option (:func:`auth_token`), which keeps it
  out of URLs and access logs;
- a logged-in Django session (same-origin pages);
- otherwise an anonymous socket, which :func:`authenticate` lets through only when
  ``DPS_ALLOW_ANONYMOUS`` is on.

A token (Django's ``signing`` with :data:`TOKEN_SALT`, so ``SECRET_KEY_FALLBACKS`` verify
tokens signed before a key rotation) names its user, its expiry, the user's token version and a
keyed fingerprint of the user's password hash. Connecting with one reads the user once (one
query, off the event loop): a missing or inactive user, a password changed since, or a version
raised by :func:`revoke_tokens` since refuses it. The version lives in
:class:`topics.models.TokenVersion` (a row only for users whose tokens were revoked).
"""
from __future__ import annotations

import base64
import binascii
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.module_loading import import_string

from topics.hooks import server_bind
from topics.hooks.identity import ANONYMOUS_IDENTITY, Identity, identity_of

logger = logging.getLogger(__name__)

TOKEN_SALT = "dps.socket-token"
DEFAULT_TOKEN_TTL = 3600.0
DEFAULT_CONNECT = "topics.hooks.auth.default_connect"
TOKEN_PARAM = "token"
# phoenix.js's ``authToken`` over a WebSocket: a subprotocol of this prefix and the token in
# base64 without padding (the standard alphabet despite the name, as Phoenix decodes it; the
# URL-safe one is read too), next to the ``phoenix`` subprotocol. (Over long-poll it is a
# header, which ``topics.transport.longpoll_http`` hands on as the ``token`` param.)
AUTH_TOKEN_PROTOCOL_PREFIX = "base64url.bearer.phx."

ConnectHook = Callable[[dict[str, str], dict[str, Any]], Awaitable[Identity | None]]


def public_keys_in_use() -> bool:
    """Whether ``SECRET_KEY`` or one of ``SECRET_KEY_FALLBACKS`` is a key anyone can read
    (``DPS_PUBLIC_SECRET_KEYS``: dps_site lists its development key)."""
    public = set(getattr(settings, "DPS_PUBLIC_SECRET_KEYS", ()))
    return bool(public & {settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())})


def network_bind_refusal(hosts: list[str]) -> str | None:
    """Why a node with a public SECRET_KEY must not listen on ``hosts`` (the non-loopback
    ones of its bind), or None when it may. For startup checks: the ASGI app's, runcluster's."""
    if not hosts or not public_keys_in_use():
        return None
    return (f"refusing to serve on {', '.join(hosts)} with the development SECRET_KEY: anyone "
            "can read it in this repository, and with it forge sessions and DPS socket tokens "
            "for any user. Set DJANGO_SECRET_KEY to a long random value, or bind to 127.0.0.1.")


def check_secret_key(argv: list[str] | None = None) -> None:
    """Refuse to serve (or sign) with a public SECRET_KEY: with DEBUG off always, and whatever
    DEBUG says when the server started by ``argv`` (at startup: ``sys.argv``) listens on a
    non-loopback address."""
    if public_keys_in_use() and not settings.DEBUG:
        raise ImproperlyConfigured(
            "DEBUG is off and SECRET_KEY (or one of SECRET_KEY_FALLBACKS) is the development "
            "key: refusing to run with the development SECRET_KEY, which anyone can read in "
            "this repository and which signs sessions and DPS socket tokens. Set "
            "DJANGO_SECRET_KEY to a long random value and keep the development key out of "
            "DJANGO_SECRET_KEY_FALLBACKS (or DJANGO_DEBUG=1 for development).")
    refusal = network_bind_refusal(server_bind.network_hosts(argv or []))
    if refusal is not None:
        raise ImproperlyConfigured(refusal)


def guard_public_key(app: Any) -> Any:
    """``app``, or, with a public SECRET_KEY, ``app`` behind a check that answers 403 to any
    request that arrived on a non-loopback address (for binds :func:`check_secret_key` cannot
    read from the command line). Nothing is added with a real key."""
    if not public_keys_in_use():
        return app
    return server_bind.RefuseNetworkRequests(app, network_bind_refusal(["a network address"]))


def _password_fingerprint(user: Any, key: str) -> str:
    # Keyed: a token's payload is readable, and must not help guess the password offline.
    return salted_hmac(TOKEN_SALT + ".password", getattr(user, "password", "") or "",
                       secret=key, algorithm="sha256").hexdigest()[:32]


def _token_version(user_pk: Any) -> int:
    from topics.models import TokenVersion

    return TokenVersion.objects.filter(user_id=user_pk).values_list(
        "version", flat=True).first() or 0


def issue_token(user: Any, ttl: float | None = None) -> str:
    """A token that identifies ``user`` (a Django user) to the default connect hook for
    ``ttl`` seconds (``DPS_TOKEN_TTL``, 1 hour, by default), until :func:`revoke_tokens`, a
    password change or deactivation. Reads the user's token version (one query)."""
    check_secret_key()
    if ttl is None:
        ttl = float(getattr(settings, "DPS_TOKEN_TTL", DEFAULT_TOKEN_TTL))
    if ttl <= 0:
        raise ValueError("a token's ttl must be positive")
    if not getattr(user, "is_active", True):
        raise ValueError(f"user {user.pk} is inactive: a token for it would be refused")
    return signing.dumps({"u": str(user.pk), "exp": time.time() + ttl,
                          "v": _token_version(user.pk),
                          "h": _password_fingerprint(user, settings.SECRET_KEY)},
                         salt=TOKEN_SALT)


def token_claims(token: str) -> dict[str, Any] | None:
    """A token's signed fields when its signature (``SECRET_KEY`` or a fallback) and expiry
    hold, else None; the user is not read (see :func:`verify_token`)."""
    try:
        data = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), str):
        return None
    expires = data.get("exp")
    if not isinstance(expires, (int, float)) or expires < time.time():
        return None
    if not isinstance(data.get("v"), int) or not isinstance(data.get("h"), str):
        return None  # signed before tokens carried a version
    return data


def _identity_of_claims(claims: dict[str, Any]) -> Identity | None:
    model = get_user_model()
    try:
        user = model._default_manager.select_related("dps_token_version").filter(
            pk=claims["u"]).first()
    except (ValueError, TypeError, ValidationError):
        return None  # not a primary key of this user model
    if user is None or not getattr(user, "is_active", True):
        return None
    try:
        version = user.dps_token_version.version
    except ObjectDoesNotExist:
        version = 0
    if claims["v"] != version:
        return None
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())]
    if not any(constant_time_compare(claims["h"], _password_fingerprint(user, key))
               for key in keys):
        return None  # the password changed since
    return Identity.of_user(user)


def verify_token(token: str) -> Identity | None:
    """The identity a token names, or None when it is tampered with, malformed or expired, or
    its user is missing or inactive, changed password or had its tokens revoked since. Reads
    the user (one query): call from sync code; async code awaits :func:`averify_token`."""
    claims = token_claims(token)
    return None if claims is None else _identity_of_claims(claims)


async def averify_token(token: str) -> Identity | None:
    """:func:`verify_token` from async code: the user is read in a thread, and only for a
    token whose signature and expiry hold."""
    claims = token_claims(token)
    if claims is None:
        return None
    return await database_sync_to_async(_identity_of_claims)(claims)


def revoke_tokens(who: Any) -> None:
    """Refuse every token issued so far to ``who`` (a user, a user id or an
    :class:`Identity`) from now on, on every node (they share the database). Sockets already
    open stay open: :func:`topics.api.disconnect` with ``revoke=True`` closes them too."""
    from topics.models import TokenVersion

    user_id = identity_of(who).user_id
    if user_id is None:
        raise ValueError("anonymous sockets have no tokens to revoke")
    if not get_user_model()._default_manager.filter(pk=user_id).exists():
        return  # a missing user's tokens are refused anyway
    for _ in range(2):  # a concurrent first revocation may create the row between the two
        if TokenVersion.objects.filter(user_id=user_id).update(version=F("version") + 1):
            return
        try:
            with transaction.atomic():
                TokenVersion.objects.create(user_id=user_id, version=1)
            return
        except IntegrityError:
            continue


async def arevoke_tokens(who: Any) -> None:
    """:func:`revoke_tokens` from async code."""
    await database_sync_to_async(revoke_tokens)(who)


def auth_token(scope: dict[str, Any]) -> str | None:
    """The token phoenix.js's ``authToken`` option sent in a WebSocket handshake's
    ``base64url.bearer.phx.`` subprotocol (None when it sent none). One that does not decode
    gives ``""``, which no check accepts (it must refuse, not fall back to anonymous)."""
    for protocol in scope.get("subprotocols") or ():
        if protocol.startswith(AUTH_TOKEN_PROTOCOL_PREFIX):
            return _decode_auth_token(protocol[len(AUTH_TOKEN_PROTOCOL_PREFIX):])
    return None


def _decode_auth_token(encoded: str) -> str:
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_",
                               validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return ""


async def default_connect(params: dict[str, str], scope: dict[str, Any]) -> Identity | None:
    """A token if one is given (``authToken`` or ``?token=``; a bad one refuses), else the
    session's user, else anonymous."""
    token = auth_token(scope)
    if token is None:
        token = params.get(TOKEN_PARAM)
    if token is not None:
        return await averify_token(token)
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
