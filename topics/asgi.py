"""The ASGI application of a site's WS nodes, as ``dps_site.asgi`` and any Django project
using DPS build it::

    from topics.asgi import application_for
    application = application_for(get_asgi_application())

WebSocket handshakes (and long-poll sessions, which run the same WebSocket app) pass, in this
order: the Origin check (``topics.hooks.origin``), the session and user of Channels'
``AuthMiddlewareStack`` (only for requests that carry a session cookie: the others are
anonymous to Django, and need no thread hop to find that out), then the routes; the consumer
runs the connect hook (``topics.hooks.auth``).
"""
from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from topics import adapters
from topics.hooks.origin import OriginCheck
from topics.transport.routing import http_app, websocket_app


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


def application_for(django_asgi_app: Any) -> ProtocolTypeRouter:
    """A WS node's whole ASGI app: ``django_asgi_app`` for HTTP except ``/socket/longpoll``,
    and the Phoenix socket for WebSockets (both through :func:`websocket_application`)."""
    websocket = websocket_application()
    return ProtocolTypeRouter({
        "http": http_app(django_asgi_app, websocket),  # /socket/longpoll before Django
        "websocket": websocket,
    })
