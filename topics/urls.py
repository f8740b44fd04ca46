"""DPS's HTTP routes; a site mounts them with ``path("dps/", include("topics.urls"))``."""
from django.urls import path

from . import api_views

urlpatterns = [
    path("token/", api_views.token, name="dps-token"),
    path("api/publish", api_views.publish, name="dps-api-publish"),
]
