"""The ASGI application of a site's WS nodes: ``ASGI_APPLICATION = "topics.asgi.application"``.

:data:`application` is the project's own Django app (HTTP, static files, sessions, auth) plus
``/socket/websocket`` and ``/socket/longpoll`` (static files under DEBUG, as ``runserver``
serves them; in production, whatever serves them today), built on first use (``runserver``, daphne and
uvicorn all fetch it at start-up): Django is set up, DPS's system checks run (an error stops the
process with its message, :mod:`topics.checks`), the cluster is checked (a node not in the
cluster file, or a Redis that does not answer, stops it too), and this node's snapshot for the
admin starts. A project that needs its own wrapping builds the same with :func:`application_for`.

WebSocket handshakes (and long-poll sessions, which run the same WebSocket app) pass, in this
order: the Origin check (``topics.hooks.origin``), the session and user of Channels'
``AuthMiddlewareStack`` (only for requests that carry a session cookie: the others are
anonymous to Django, and need no thread hop to find that out), then the routes; the consumer
runs the connect hook (``topics.hooks.auth``).
"""
from __future__ import annotations

import sys
from typing import Any

import django

django.setup(set_prefix=False)  # as get_asgi_application does: the imports below need the apps

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth.models import AnonymousUser  # noqa: E402

from topics import adapters  # noqa: E402
from topics.hooks.origin import OriginCheck  # noqa: E402
from topics.transport.routing import http_app, websocket_app  # noqa: E402


class SessionUser:
    """``scope["user"]`` from the session cookie, through ``AuthMiddlewareStack``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.with_session = AuthMiddlewareStack(app)
        self.cookie = settings.SESSION_COOKIE_NAME.encode("latin-1")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        for name, value in scope.get("headers", ()):
            if name == b"cookie" and self.cookie in value:
                return await self.with_session(scope, receive, send)
        scope = {**scope, "user": AnonymousUser()}
        return await self.app(scope, receive, send)


def websocket_application(urlpatterns: list | None = None) -> OriginCheck:
    """The ASGI app for ``"websocket"``: Origin check, session user, then ``urlpatterns``
    (default: DPS's Phoenix endpoint at ``/socket/websocket``)."""
    adapters.install()  # the server patches that are on (topics.adapters.registry)
    inner = websocket_app() if urlpatterns is None else URLRouter(urlpatterns)
    return OriginCheck(SessionUser(inner))


def ready_application() -> ProtocolTypeRouter:
    """The whole WS node, after the start-up checks (see the module's docstring)."""
    from django.core.asgi import get_asgi_application

    django_asgi_app = get_asgi_application()  # sets Django up before anything imports models

    from channel_layer.startup import check_ws_node
    from topics.checks import refuse_on_errors
    from topics.hooks.auth import announce_anonymous, check_secret_key, guard_public_key
    from topics.operator.node_report import start_for_this_process

    if settings.DEBUG and apps.is_installed("django.contrib.staticfiles"):
        # What runserver does; daphne and uvicorn (runcluster's nodes) serve no static files.
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)
    refuse_on_errors()
    check_ws_node()  # an unusable cluster file or an unreachable Redis stops the server here
    # The public development key with DEBUG off, or on a non-loopback bind: refuse, say why.
    check_secret_key(sys.argv)
    announce_anonymous()
    start_for_this_process()  # this WS node's snapshot for the admin, every stats_interval
    # Binds the command line does not show: each request on a network address gets 403 instead.
    return guard_public_key(application_for(django_asgi_app))


_ready: ProtocolTypeRouter | None = None


def __getattr__(name: str) -> Any:
    """``topics.asgi.application``, built once on first access (importing this module for
    :func:`application_for` sets nothing up)."""
    global _ready
    if name != "application":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _ready is None:
        _ready = ready_application()
    return _ready


def application_for(django_asgi_app: Any) -> ProtocolTypeRouter:
    """A WS node's whole ASGI app: ``django_asgi_app`` for HTTP except ``/socket/longpoll``,
    and the Phoenix socket for WebSockets (both through :func:`websocket_application`)."""
    websocket = websocket_application()
    return ProtocolTypeRouter({
        "http": http_app(django_asgi_app, websocket),  # /socket/longpoll before Django
        "websocket": websocket,
    })
