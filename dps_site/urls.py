"""HTTP routes of a DPS node: the demo chat, the Django admin with the cluster's ring and topic
statistics (DPS's ModelAdmins), the node's Prometheus metrics (at ``/metrics`` as well as
``/dps/metrics``), and DPS's token and publish endpoints under ``/dps/``."""
from django.contrib import admin
from django.urls import include, path

from topics.operator import views

urlpatterns = [
    path("", views.demo, name="demo"),
    path("demo/history", views.demo_history, name="demo-history"),
    path("metrics", views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("dps/", include("topics.urls")),
]
