"""What Django code (views, tasks, the shell) can ask about a topic, from any process.

Both questions go to the topic's owner and are answered at their place in the topic's order.
``a``-prefixed functions are the coroutines; the others are for synchronous code.
"""
from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .protocol.topics import group_for_topic


def _dps_layer() -> Any:
    layer = get_channel_layer()
    if not hasattr(layer, "group_presence"):
        raise TypeError(f"presence and history need the DPS channel layer, not {layer!r}")
    return layer


async def apresence(topic: str) -> dict[str, Any]:
    """Who is in ``topic``, in Phoenix's format: ``{key: {"metas": [{"phx_ref", ...}]}}``."""
    return await _dps_layer().group_presence(group_for_topic(topic))


async def ahistory(topic: str, since: int = 0) -> dict[str, Any] | None:
    """The broadcasts the owner keeps for ``topic`` after offset ``since``, oldest first:
    ``{"position": {"offset", "epoch"}, "messages": [{"offset", "event", "payload"}]}``
    (``payload`` as JSON text); None when no ``history`` pattern covers the topic."""
    answer = await _dps_layer().group_history(group_for_topic(topic), since)
    if answer is None:
        return None
    return {"position": answer["position"],
            "messages": [{"offset": offset, "event": message.get("event"),
                          "payload": message.get("payload")}
                         for offset, message in answer["messages"]]}


def presence(topic: str) -> dict[str, Any]:
    return async_to_sync(apresence)(topic)


def history(topic: str, since: int = 0) -> dict[str, Any] | None:
    return async_to_sync(ahistory)(topic, since)
