"""Admission: whether a WebSocket handshake becomes a socket, and who it is.

:func:`admit` runs the node's connection limit, the connect hook (``topics.hooks.auth``) and the
identity's limit (``topics.hooks.limits``), in that order, and answers a refusal on the
handshake (403 unauthenticated, 429 too many sockets for the identity, 503 node full or cluster
unavailable; ``topics.transport.handshake``), counted by reason in
``topics.transport.connections``. An admitted socket is counted there and joins its identity's
group, which ``topics.api.disconnect`` addresses; :func:`release` undoes both.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from topics.hooks import limits
from topics.hooks.auth import authenticate, connect_params
from topics.hooks.handlers import SocketContext
from topics.transport import connections
from topics.transport.handshake import refuse

logger = logging.getLogger(__name__)


async def admit(scope: dict[str, Any], send: Callable[[dict], Awaitable[None]], layer: Any,
                channel_name: str) -> SocketContext | None:
    """The admitted socket's context, or None once the handshake has been refused."""
    refusal = limits.connection_refusal(None)
    if refusal is None:
        params = connect_params(scope)
        identity = await authenticate(scope, params)
        if identity is None:
            refusal = (403, "unauthenticated")
        else:
            refusal = limits.connection_refusal(identity)
    if refusal is not None:
        connections.count_refusal(refusal[1])
        await refuse(scope, send, *refusal)
        return None
    connections.register(identity.name)
    if identity.group is not None:
        try:
            await layer.group_add(identity.group, channel_name)
        except Exception as exc:
            logger.warning("could not register a socket of %s: %s", identity.name,
                           type(exc).__name__)
            connections.unregister(identity.name)
            connections.count_refusal("the cluster is unavailable")
            await refuse(scope, send, limits.NODE_FULL, "the cluster is unavailable")
            return None
    return SocketContext(identity, params, scope)


async def release(context: SocketContext, layer: Any, channel_name: str) -> None:
    """The socket is gone: uncount it and leave its identity's group."""
    connections.unregister(context.identity.name)
    if context.identity.group is not None:
        await leave_group(layer, context.identity.group, channel_name, "identity group")


async def leave_group(layer: Any, group: str, channel_name: str, what: str) -> None:
    """``group_discard`` that logs a failure instead of raising: the socket has already dropped
    the group, so nothing more reaches the client either way, and the layer's own expiry
    removes the stale membership."""
    try:
        await layer.group_discard(group, channel_name)
    except Exception as exc:
        logger.warning("leave of %s failed: %s", what, type(exc).__name__)
