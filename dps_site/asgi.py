"""The ASGI application of a WS node: Django for HTTP, the Phoenix socket for WebSockets.

Run with ``daphne dps_site.asgi:application`` (or any ASGI server). No origin check: clients
are not only browsers. ``/socket/longpoll`` runs the same WebSocket application (see
``topics.longpoll``).
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dps_site.settings")
# Set up Django (apps, settings) before anything imports models or consumers.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from channel_layer.startup import check_ws_node  # noqa: E402
from topics.daphne_compat import allow_protocol_close_codes  # noqa: E402
from topics.routing import http_app, websocket_app  # noqa: E402
from topics.uvicorn_compat import quiet_client_protocol_errors  # noqa: E402

allow_protocol_close_codes()
quiet_client_protocol_errors()

check_ws_node()  # a bad cluster file or an unreachable Redis stops the server here, clearly

from topics.node_report import start_for_this_process  # noqa: E402

start_for_this_process()  # this WS node's snapshot for the admin, every stats_interval

websocket = websocket_app()
application = ProtocolTypeRouter({
    "http": http_app(django_asgi_app, websocket),  # /socket/longpoll before Django
    "websocket": websocket,
})
