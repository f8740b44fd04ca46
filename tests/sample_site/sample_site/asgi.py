"""HTTP through Django (and DPS's long-poll endpoint), WebSockets through DPS's Phoenix socket."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sample_site.settings")
django_asgi_app = get_asgi_application()

from topics.asgi import application_for  # noqa: E402

application = application_for(django_asgi_app)
