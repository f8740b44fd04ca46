"""The ``topics`` Django app: the Phoenix protocol side of a DPS node.

On start-up it registers DPS's system checks (:mod:`topics.checks`) and, when the project sets
no ``CHANNEL_LAYERS``, makes the DPS layer the default one, so that ``INSTALLED_APPS`` and
``ASGI_APPLICATION`` are all a project needs.
"""
from django.apps import AppConfig
from django.conf import settings

DEFAULT_CHANNEL_LAYERS = {"default": {"BACKEND": "channel_layer.DPSChannelLayer"}}


class TopicsConfig(AppConfig):
    name = "topics"
    label = "dps"  # the admin's section and URLs: /admin/dps/...
    verbose_name = "DPS"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from topics import checks  # noqa: F401  (registers the checks)

        if not getattr(settings, "CHANNEL_LAYERS", None):
            settings.CHANNEL_LAYERS = DEFAULT_CHANNEL_LAYERS
