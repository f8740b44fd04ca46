"""What Django code (a view, a Celery task, ``manage.py shell``: any process with the cluster
configuration, ``DPS_CLUSTER``; no ``DPS_NODE`` needed) can do with Phoenix clients.

``broadcast`` goes to the topic's owner like a client's publish, so it takes its place in the
same order and reaches every member on every node exactly once. Topic handlers do not see it:
it is the site speaking. ``presence`` and ``history`` are answered by the topic's owner at their
place in the topic's order; ``presence_update`` changes a user's presence meta there. Call the
``a``-prefixed coroutines from async code.
"""
from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from topics.hooks.auth import arevoke_tokens, averify_token, issue_token, revoke_tokens, verify_token
from topics.hooks.handlers import topic_routes
from topics.hooks.identity import Identity, identity_of
from topics.hooks.limits import max_payload_bytes, payload_too_large
from topics.protocol import group_for_topic, is_valid_topic, publish_error
from topics.protocol.message import dumps
from topics.protocol.topic_names import is_topics_topic, is_valid_site_topic
from topics.transport.broadcasts import broadcast_message
from topics.transport.consumer import DISCONNECT_TYPE, PRESENCE_UPDATE_TYPE

__all__ = ["BroadcastError", "abroadcast", "adisconnect", "ahistory", "apresence",
           "apresence_update", "arevoke_tokens", "averify_token", "broadcast", "disconnect",
           "history", "issue_token", "presence", "presence_update", "revoke_tokens",
           "verify_token", "Identity"]


class BroadcastError(ValueError):
    """A broadcast that cannot be sent: the message says why."""


def encode_broadcast(topic: str, event: str, payload: Any) -> str | bytes:
    """``payload`` as what every member gets: JSON text, or ``bytes`` as they are (a binary
    broadcast, an ``ArrayBuffer`` in phoenix.js); raises :class:`BroadcastError` for a topic no
    ``DPS_TOPICS`` pattern serves or an invalid name, event or payload."""
    if not isinstance(topic, str) or not topic_routes().routes(topic):
        raise BroadcastError(f"no DPS_TOPICS pattern serves the topic {topic!r}")
    valid = is_valid_topic(topic) if is_topics_topic(topic) else is_valid_site_topic(topic)
    if not valid:
        raise BroadcastError(f"invalid topic name {topic!r}")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        reason = publish_error([event, {}])  # the event's rules; any bytes are a payload
        if reason is not None:
            raise BroadcastError(reason)
        data = bytes(payload)
        too_large = payload_too_large(data, max_payload_bytes())
        if too_large is not None:
            raise BroadcastError(too_large)
        return data
    reason = publish_error([event, payload])
    if reason is not None:
        raise BroadcastError(reason)
    try:
        payload_json = dumps(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise BroadcastError(f"payload is not JSON: {exc}") from None
    too_large = payload_too_large(payload_json, max_payload_bytes())
    if too_large is not None:
        raise BroadcastError(too_large)
    return payload_json


async def abroadcast(topic: str, event: str, payload: dict[str, Any] | bytes) -> None:
    """Send ``event`` with ``payload`` (a JSON object, or bytes) to every member of ``topic``."""
    payload_json = encode_broadcast(topic, event, payload)
    await get_channel_layer().group_send(
        group_for_topic(topic), broadcast_message(topic, event, payload_json))


def broadcast(topic: str, event: str, payload: dict[str, Any] | bytes) -> None:
    """:func:`abroadcast` for sync code (views, tasks, the shell)."""
    async_to_sync(abroadcast)(topic, event, payload)


async def adisconnect(who: Any, revoke: bool = False) -> None:
    """Close every socket of ``who`` (a user, a user id or an :class:`Identity`) on every WS
    node with code 1001, as Phoenix's ``disconnect`` broadcast does; the client may reconnect
    (and is judged again by the connect hook). With ``revoke``, every token issued to ``who``
    so far is refused first (:func:`revoke_tokens`), so they cannot reconnect with one; a
    logged-in session still can, until the site logs it out or deactivates the user."""
    group = identity_of(who).group
    if group is None:
        raise ValueError("anonymous sockets have no identity to disconnect by")
    if revoke:
        await arevoke_tokens(who)
    await get_channel_layer().group_send(group, {"type": DISCONNECT_TYPE})


def disconnect(who: Any, revoke: bool = False) -> None:
    """:func:`adisconnect` for sync code."""
    async_to_sync(adisconnect)(who, revoke)


async def apresence_update(who: Any, topic: str, meta: dict[str, Any]) -> None:
    """Give ``who``'s presence on ``topic`` (each of its sockets tracked there, on every WS
    node) the meta ``meta``, as Phoenix's ``Presence.update``: ``meta`` replaces the old meta
    (DPS's ``online_at`` and ``name`` stay unless it gives them), and members get one
    ``presence_diff`` whose ``leaves`` hold the old meta and whose ``joins`` hold the new one,
    with ``phx_ref_prev`` naming the old ``phx_ref``. ``who``: a user, a user id or an
    :class:`Identity`; sockets that are not tracked on ``topic`` are left alone."""
    group = identity_of(who).group
    if group is None:
        raise ValueError("anonymous sockets have no identity to update the presence of")
    if not isinstance(meta, dict):
        raise TypeError(f"a presence meta is a dict, not {type(meta).__name__}")
    meta_json = dumps(meta)  # raises for what is not JSON, here rather than at every socket
    too_large = payload_too_large(meta_json, max_payload_bytes())
    if too_large is not None:
        raise ValueError(too_large)
    await get_channel_layer().group_send(group, {"type": PRESENCE_UPDATE_TYPE, "topic": topic,
                                                 "meta": meta})


def presence_update(who: Any, topic: str, meta: dict[str, Any]) -> None:
    """:func:`apresence_update` for sync code."""
    async_to_sync(apresence_update)(who, topic, meta)


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
