"""The ASGI application of a WS node: Django for HTTP, the Phoenix socket for WebSockets.

Run with ``daphne dps_site.asgi:application`` (or any ASGI server). WebSocket handshakes and
``/socket/longpoll`` sessions pass the Origin check and the connect hook (``topics.asgi``,
``topics.hooks.auth``).
"""
import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dps_site.settings")
# Set up Django (apps, settings) before anything imports models or consumers.
django_asgi_app = get_asgi_application()

from channel_layer.startup import check_ws_node  # noqa: E402
from topics.asgi import application_for  # noqa: E402
from topics.hooks.auth import announce_anonymous, check_secret_key, guard_public_key  # noqa: E402

check_ws_node()  # a bad cluster file or an unreachable Redis stops the server here, clearly
# The public development key with DEBUG off, or on a non-loopback bind: refuse to serve, say why.
check_secret_key(sys.argv)
announce_anonymous()

from topics.operator.node_report import start_for_this_process  # noqa: E402

start_for_this_process()  # this WS node's snapshot for the admin, every stats_interval

# Binds the command line does not show: each request on a network address gets 403 instead.
application = guard_public_key(application_for(django_asgi_app))
