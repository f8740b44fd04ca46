"""Routes: the Phoenix socket endpoints, as Phoenix serves them.

``/socket/websocket`` is the WebSocket consumer; ``/socket/longpoll`` (HTTP) runs the same
consumer behind the long-poll transport, so whatever wraps ``websocket_app`` (a connect hook,
middleware) wraps long-poll sessions too. Every other HTTP path goes to Django.
"""
from __future__ import annotations

from collections.abc import Callable

from channels.routing import URLRouter
from django.urls import path

from topics.transport.consumer import PhoenixSocketConsumer
from topics.transport.longpoll import PATH as LONGPOLL_PATH
from topics.transport.longpoll import ASGIApp, LongPollEndpoint

websocket_urlpatterns = [
    path("socket/websocket", PhoenixSocketConsumer.as_asgi()),
]


def websocket_app() -> ASGIApp:
    return URLRouter(websocket_urlpatterns)


def http_app(django_app: ASGIApp, websocket: ASGIApp) -> ASGIApp:
    """Django for HTTP, except the long-poll endpoint, which is answered before Django."""
    longpoll = LongPollEndpoint(websocket)

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("path") == LONGPOLL_PATH:
            await longpoll(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    app.longpoll = longpoll
    return app
