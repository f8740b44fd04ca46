"""The ``topics`` Django app: the Phoenix protocol side of a DPS node."""
from django.apps import AppConfig


class TopicsConfig(AppConfig):
    name = "topics"
    verbose_name = "DPS topics"
