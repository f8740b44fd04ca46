"""The admin's window on the live cluster: ``/admin/dps/cluster/`` and ``/admin/dps/cluster.json``.

Both views are staff-only (wrapped in ``admin.site.admin_view``: anyone else gets the admin
login redirect, never the data) and read-only; what they show comes from
:mod:`topics.cluster_stats`. The admin index links here through ``admin/dps/index.html``.
``dps_site/urls.py`` mounts :data:`urlpatterns` under ``admin/dps/``.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path

from channel_layer.cluster import ClusterConfigError

from . import cluster_stats

app_name = "dps"
admin.site.index_template = "admin/dps/index.html"


def _top(request: HttpRequest) -> int:
    default = getattr(settings, "DPS_ADMIN_TOP_TOPICS", cluster_stats.TOP_TOPICS)
    try:
        return max(1, min(int(request.GET.get("n", default)), 1000))
    except ValueError:
        return default


def _cluster_data(request: HttpRequest) -> dict[str, Any]:
    try:
        source = cluster_stats.default_source()
    except ClusterConfigError as exc:  # its message already redacts URLs
        return {"error": f"the cluster configuration is unusable: {exc}"}
    return cluster_stats.gather(
        source, query=request.GET.get("q", ""), lookup=request.GET.get("topic", ""),
        top=_top(request),
        timeout=getattr(settings, "DPS_ADMIN_REDIS_TIMEOUT", cluster_stats.REDIS_TIMEOUT))


def cluster_view(request: HttpRequest) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": "DPS cluster",
               "data": _cluster_data(request)}
    return TemplateResponse(request, "admin/dps/cluster.html", context)


def cluster_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_cluster_data(request))


urlpatterns = [
    path("cluster/", admin.site.admin_view(cluster_view), name="cluster"),
    path("cluster.json", admin.site.admin_view(cluster_json), name="cluster_json"),
]
