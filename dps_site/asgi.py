"""The ASGI application of a WS node of the repository's site: ``topics.asgi.application``
(Django for HTTP, the Phoenix socket for WebSockets, the start-up checks), under this site's
settings. Run with ``daphne dps_site.asgi:application`` (or any ASGI server)."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dps_site.settings")

from topics.asgi import application  # noqa: E402,F401
