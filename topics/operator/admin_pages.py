"""The operator's pages in the admin: the cluster, the topics list, one topic; and JSON twins.

Every view is staff-only (wrapped in ``admin.site.admin_view``: anyone else gets the admin login
redirect, never the data) and read-only. The data comes from :mod:`topics.operator.cluster_stats` and
:mod:`topics.operator.topic_list`; the templates extend the admin's, so they carry its stylesheet, theme
toggle and breadcrumbs. ``dps_site/urls.py`` mounts :data:`urlpatterns` under ``admin/dps/``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path

from channel_layer.cluster import ClusterConfigError
from topics.operator import cluster_stats, topic_list

app_name = "dps"
admin.site.index_template = "admin/dps/index.html"


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


def _page(request: HttpRequest, template: str, title: str, **context: Any) -> TemplateResponse:
    return TemplateResponse(request, f"admin/dps/{template}",
                            {**admin.site.each_context(request), "title": title, **context})


def cluster_view(request: HttpRequest) -> HttpResponse:
    return _page(request, "cluster.html", "DPS cluster", data=_cluster_data(request))


def cluster_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_cluster_data(request))


def topics_view(request: HttpRequest) -> HttpResponse:
    data = _topics_data(request)
    return _page(request, "topics.html", "DPS topics", data=data,
                 columns=_sort_columns(data), pages=_page_links(data))


def topics_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_topics_data(request))


def topic_view(request: HttpRequest, topic: str) -> HttpResponse:
    data = _topic_data(topic)
    row = data.get("row") or {}
    return _page(request, "topic.html", f"Topic {topic}", topic=topic, data=data,
                 chart=_chart(row.get("history") or [], row.get("bucket") or 0.0))


def topic_json(request: HttpRequest, topic: str) -> JsonResponse:
    return JsonResponse(_topic_data(topic))


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


def _staff(view: Callable) -> Callable:
    return admin.site.admin_view(view)


urlpatterns = [
    path("cluster/", _staff(cluster_view), name="cluster"),
    path("cluster.json", _staff(cluster_json), name="cluster_json"),
    path("topics/", _staff(topics_view), name="topics"),
    path("topics.json", _staff(topics_json), name="topics_json"),
    path("topics/<str:topic>/", _staff(topic_view), name="topic"),
    path("topics/<str:topic>.json", _staff(topic_json), name="topic_json"),
]
