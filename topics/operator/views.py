"""Plain HTTP endpoints of a WS node (the admin's pages live in ``topics.operator.admin_pages``)."""
from __future__ import annotations

import functools
import os

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry

from topics.operator import prometheus_export


@functools.cache
def _registry() -> CollectorRegistry:
    from channels.layers import get_channel_layer

    from channel_layer.layer import DPSChannelLayer

    layer = get_channel_layer()
    return prometheus_export.registry_for(
        prometheus_export.WsNodeCollector(layer if isinstance(layer, DPSChannelLayer) else None))


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """This node's Prometheus metrics; who may read them: ``prometheus_export.refusal``."""
    status = prometheus_export.refusal(request.headers.get("Authorization"),
                                       *prometheus_export.access_settings())
    if status == 401:
        response = HttpResponse(prometheus_export.BEARER_REQUIRED, status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if status == 403:
        return HttpResponse(prometheus_export.CLOSED, status=403, content_type="text/plain")
    body, content_type = prometheus_export.render(_registry())
    return HttpResponse(body, content_type=content_type)


@require_GET
def demo(request: HttpRequest) -> HttpResponse:
    """The demo chat over ``rooms:*`` (presence, recovery), served by every WS node."""
    from channels.layers import get_channel_layer

    policy = getattr(get_channel_layer(), "history_policy", lambda group: None)("rooms.lobby")
    return render(request, "dps/demo.html", {"node": os.environ.get("DPS_NODE") or "dev",
                                             "history": policy})
