"""Plain HTTP endpoints of a WS node (the admin's pages live in ``topics.operator.admin_pages``)."""
from __future__ import annotations

import functools
import json
import os

from django.http import HttpRequest, HttpResponse, JsonResponse
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


HISTORY_SHOWN = 100  # the most recent messages a new joiner of a demo room sees
CHAT_EVENT = "new_msg"  # what the demo's rooms broadcast (dps_site/chat.py, demo.js)


@require_GET
async def demo_history(request: HttpRequest) -> JsonResponse:
    """The demo room's recent messages up to offset ``until`` (the position of the visitor's
    join reply, so that none is shown twice), from the owner's history (``topics.api``)."""
    from topics.api import ahistory
    from topics.protocol.topic_names import is_valid_site_topic

    topic = "rooms:" + request.GET.get("room", "")
    try:
        until = int(request.GET.get("until", ""))
    except ValueError:
        until = None
    if not is_valid_site_topic(topic) or until is None:
        return JsonResponse({"error": "room and until are required"}, status=400)
    try:
        found = await ahistory(topic)
    except Exception:  # no DPS layer, or the owner did not answer: show nothing, not a 500
        found = None
    messages = [{"offset": m["offset"], "payload": json.loads(m["payload"])}
                for m in (found or {}).get("messages", [])
                if m["event"] == CHAT_EVENT and m["offset"] <= until
                and isinstance(m["payload"], str)]  # a binary broadcast is not a chat line
    return JsonResponse({"messages": messages[-HISTORY_SHOWN:]})
