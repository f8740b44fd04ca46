"""The plain-Channels baseline's ASGI application, as a Django team's ``asgi.py`` has it.

Django for HTTP; for WebSockets Channels' ``AuthMiddlewareStack`` around one route,
``/socket/websocket`` -> :class:`~topics.devtools.benchmark.plain_consumer.PlainRoomConsumer`.
(No ``AllowedHostsOriginValidator``: the load generator, like any non-browser client, sends no
``Origin``, which that validator refuses.) It runs with ``settings_plain_redis`` or
``settings_plain_redis_pubsub``, a minimal project without DPS's app, so none of DPS's server
patches or checks are loaded.
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "topics.devtools.benchmark.settings_plain_redis")
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the apps set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from topics.devtools.benchmark.plain_consumer import PlainRoomConsumer  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_application,
    "websocket": AuthMiddlewareStack(URLRouter([
        path("socket/websocket", PlainRoomConsumer.as_asgi()),
    ])),
})
