"""WebSocket routes: the Phoenix socket endpoint, as Phoenix serves it."""
from django.urls import path

from .consumers import PhoenixSocketConsumer

websocket_urlpatterns = [
    path("socket/websocket", PhoenixSocketConsumer.as_asgi()),
]
