"""DPS's HTTP routes; a site mounts them with ``path("dps/", include("topics.urls"))``."""
from django.urls import path

from topics.api import views

urlpatterns = [
    path("token/", views.token, name="dps-token"),
    path("api/publish", views.publish, name="dps-api-publish"),
]
