"""DPS's HTTP routes; a site mounts them with ``path("dps/", include("topics.urls"))``: the
token endpoint, the publish API and this node's Prometheus metrics. (The admin's DPS pages need
no route here: they are ModelAdmins, see :mod:`topics.operator.admin_pages`.)"""
from django.urls import path

from topics.api import views
from topics.operator.views import metrics

urlpatterns = [
    path("token/", views.token, name="dps-token"),
    path("api/publish", views.publish, name="dps-api-publish"),
    path("metrics", metrics, name="dps-metrics"),
]
