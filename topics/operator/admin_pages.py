"""The operator's pages in the admin: the cluster, the topics list, one topic; and JSON twins.

The pages are two ModelAdmins over the unmanaged models of :mod:`topics.models`, so any
project's admin lists them in its own index and mounts them (``/admin/dps/cluster/``,
``/admin/dps/topics/``, ``/admin/dps/topics/<topic>/``, each with a ``json`` twin) with no URLconf
edit and its index template untouched. Every view is staff-only (wrapped in the site's
``admin_view``: anyone else gets the admin login redirect, never the data) and read-only. The
data comes from :mod:`topics.operator.cluster_stats` and :mod:`topics.operator.topic_list`; the
templates extend the admin's, so they carry its stylesheet, theme toggle and breadcrumbs.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from channel_layer.cluster import ClusterConfigError
from topics.models import Cluster, Topics
from topics.operator import cluster_stats, topic_list


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _top(request: HttpRequest) -> int:
    default = _setting("DPS_ADMIN_TOP_TOPICS", cluster_stats.TOP_TOPICS)
    try:
        return max(1, min(int(request.GET.get("n", default)), 1000))
    except ValueError:
        return default


def _timeout() -> float:
    return _setting("DPS_ADMIN_REDIS_TIMEOUT", cluster_stats.REDIS_TIMEOUT)


def _with_source(read: Callable[[cluster_stats.Source], dict[str, Any]]) -> dict[str, Any]:
    try:
        source = cluster_stats.default_source()
    except ClusterConfigError as exc:  # its message already redacts URLs
        return {"error": f"the cluster configuration is unusable: {exc}"}
    started = time.perf_counter()
    data = read(source)
    data["read_seconds"] = time.perf_counter() - started
    return data


def _cluster_data(request: HttpRequest) -> dict[str, Any]:
    return _with_source(lambda source: cluster_stats.gather(
        source, query=request.GET.get("q", ""), lookup=request.GET.get("topic", ""),
        top=_top(request), timeout=_timeout()))


def _topics_data(request: HttpRequest) -> dict[str, Any]:
    query = topic_list.TopicQuery.from_params(
        request.GET, _setting("DPS_ADMIN_PAGE_SIZE", topic_list.PAGE_SIZE))
    return _with_source(lambda source: topic_list.topic_page(
        source, query, _timeout(), _setting("DPS_ADMIN_SEARCH_LIMIT", topic_list.SEARCH_LIMIT)))


def _topic_data(topic: str) -> dict[str, Any]:
    return _with_source(lambda source: topic_list.topic_detail(source, topic, _timeout()))


# ------------------------------------------------------------------- template helpers
def _sort_columns(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The sortable headers of the change list: each links to its order, flipped if current."""
    columns = []
    for key, label in (("members", "Members"), ("rate", "Publishes/s (1 min)"),
                       ("last", "Last activity")):
        current = data.get("order") == key
        descending = data.get("descending", True)
        flip = "-" if current and descending else ""
        columns.append({"key": key, "label": label, "sorted": current,
                        "ascending": current and not descending, "param": f"{flip}{key}"})
    return columns


def _page_links(data: dict[str, Any], around: int = 3) -> list[int | None]:
    """Page numbers to link (None = an ellipsis), as the admin's paginator shows them."""
    pages, page = data.get("pages", 1), data.get("page", 1)
    wanted = sorted({1, 2, pages - 1, pages, *range(page - around, page + around + 1)})
    links: list[int | None] = []
    for number in (n for n in wanted if 1 <= n <= pages):
        if links and links[-1] is not None and number > links[-1] + 1:
            links.append(None)
        links.append(number)
    return links


def _chart(history: list[int], bucket: float, bars: int = 30, width: int = 360,
           height: int = 80) -> dict[str, Any]:
    """Bars of publishes over the last minute (at most ``bars``, buckets merged to fit),
    scaled to the busiest bar."""
    merge = max(1, -(-len(history) // bars))
    counts = [sum(history[i:i + merge]) for i in range(0, len(history), merge)]
    peak = max(counts, default=0)
    step = width / max(1, len(counts))
    scale = height / (peak or 1)
    return {"width": width, "height": height, "peak": peak, "seconds": bucket * merge,
            "bars": [{"x": round(i * step, 1), "w": round(max(1.0, step - 2), 1),
                      "h": round(count * scale, 1), "y": round(height - count * scale, 1),
                      "count": count} for i, count in enumerate(counts)]}


class _PagesAdmin(admin.ModelAdmin):
    """A model's admin that serves read-only pages instead of a change list: staff see it,
    nobody adds, changes or deletes anything (there is no table)."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def page(self, request: HttpRequest, template: str, title: str,
             **context: Any) -> TemplateResponse:
        return TemplateResponse(request, f"admin/dps/{template}", {
            **self.admin_site.each_context(request), "title": title,
            "opts": self.model._meta, **context})

    def staff(self, view: Callable) -> Callable:
        return self.admin_site.admin_view(view)


@admin.register(Cluster)
class ClusterAdmin(_PagesAdmin):
    def get_urls(self) -> list[URLPattern]:
        return [path("", self.staff(self.cluster_view), name="dps_cluster_changelist"),
                path("json", self.staff(cluster_json), name="dps_cluster_json")]

    def cluster_view(self, request: HttpRequest) -> HttpResponse:
        return self.page(request, "cluster.html", "DPS cluster", data=_cluster_data(request))


@admin.register(Topics)
class TopicsAdmin(_PagesAdmin):
    def get_urls(self) -> list[URLPattern]:
        return [path("", self.staff(self.topics_view), name="dps_topics_changelist"),
                path("json", self.staff(topics_json), name="dps_topics_json"),
                path("<str:topic>/", self.staff(self.topic_view), name="dps_topic"),
                path("<str:topic>/json", self.staff(topic_json), name="dps_topic_json")]

    def topics_view(self, request: HttpRequest) -> HttpResponse:
        data = _topics_data(request)
        return self.page(request, "topics.html", "DPS topics", data=data,
                         columns=_sort_columns(data), pages=_page_links(data))

    def topic_view(self, request: HttpRequest, topic: str) -> HttpResponse:
        data = _topic_data(topic)
        row = data.get("row") or {}
        return self.page(request, "topic.html", f"Topic {topic}", topic=topic, data=data,
                         chart=_chart(row.get("history") or [], row.get("bucket") or 0.0))


def cluster_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_cluster_data(request))


def topics_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_topics_data(request))


def topic_json(request: HttpRequest, topic: str) -> JsonResponse:
    return JsonResponse(_topic_data(topic))
