"""``DPSChannelLayer``: a complete Channels layer whose groups are routed by a hash ring.

The public surface is exactly the Channels layer specification (plus the ``groups`` and
``flush`` extensions). What differs is where things go: a process-specific channel
(``specific.<node>!<id>``) lives in its node's memory and a ``send`` to it goes straight to
that node's inbox; a plain channel is a list on its ring owner's Redis; ``group_send`` goes to
the group's owner topic server, which sends one message per WS node holding members.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from channel_layer import wire
from channel_layer.cluster import Cluster, current_node_name, load_cluster
from channel_layer.history import HistoryPatterns, HistoryPolicy
from channel_layer.local_channels import Fastlane, Wakeups
from channel_layer.runtime import NodeRuntime, acquire_runtime, node_of_channel, release_runtime
from channel_layer.settings import LayerSettings

_CHANNEL_NAME = re.compile(r"[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?", re.ASCII)
_GROUP_NAME = re.compile(r"[a-zA-Z\d\-_.]+", re.ASCII)


def _django_setting(name: str) -> Any:
    try:
        from django.conf import settings

        return getattr(settings, name, None)
    except Exception:  # used outside a configured Django project
        return None


class DPSChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush", "presence", "history"]

    def __init__(self, expiry: float = 60, capacity: int = 100,
                 channel_capacity: dict | None = None, group_expiry: float = 86400,
                 cluster: dict | Cluster | None = None, node: str | None = None,
                 **options: Any) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        # DPS_LAYER (one JSON for every node of a deployment) overrides CONFIG.
        self.settings = LayerSettings.from_config({
            "expiry": expiry, "capacity": capacity, "group_expiry": group_expiry, **options,
            **(_django_setting("DPS_LAYER") or {})})
        self.expiry = self.settings.expiry
        self.capacity = self.settings.capacity
        self.group_expiry = self.settings.group_expiry
        if isinstance(cluster, Cluster):
            self.cluster = cluster
        else:
            self.cluster = load_cluster(cluster or _django_setting("DPS_CLUSTER"))
        self.node = node or current_node_name(self.cluster, _django_setting("DPS_NODE"))
        self._runtime: NodeRuntime | None = None
        self._history = HistoryPatterns(self.settings.history)

    @property
    def runtime(self) -> NodeRuntime:
        """This node's runtime, shared with every other layer instance of the node in this
        process (see ``channel_layer.runtime.acquire_runtime``)."""
        runtime = self._runtime
        if runtime is None:
            runtime = self._runtime = acquire_runtime(self.cluster, self.node, self.settings,
                                                      self.get_capacity)
        return runtime

    # ---------------------------------------------------------------------- validation
    def require_valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        # Full match (a trailing newline is not a name), ASCII only, and receive() accepts
        # the full "specific.X!Y" names that consumers actually pass.
        if not self.match_type_and_length(name) or not _CHANNEL_NAME.fullmatch(name):
            raise TypeError(self.invalid_name_error.format("Channel"))
        return True

    def require_valid_group_name(self, name: Any) -> bool:
        if not self.match_type_and_length(name) or not _GROUP_NAME.fullmatch(name):
            raise TypeError(self.invalid_name_error.format("Group"))
        return True

    def _encode(self, message: Any) -> tuple[float, bytes]:
        wire.check_message(message)
        return time.time() + self.settings.expiry, wire.encode_message(
            message, self.settings.max_message_bytes)

    # ----------------------------------------------------------------------- channels
    async def send(self, channel: str, message: dict) -> None:
        self.require_valid_channel_name(channel)
        expires_at, data = self._encode(message)
        runtime = self.runtime
        node = node_of_channel(channel)
        if node is None:
            if not await runtime.call(runtime.plain.send(channel, expires_at, data,
                                                         self.get_capacity(channel))):
                raise ChannelFull(channel)
        elif node == self.node:
            # Same process: no hop. Decoding our own encoding gives the receiver its own copy,
            # exactly as a remote receiver would get it.
            capacity = self.get_capacity(channel)
            if runtime.local.is_full(channel, capacity):
                raise ChannelFull(channel)
            wake = Wakeups()
            runtime.local.deliver(channel, expires_at, wire.decode_message(data), wake, capacity)
            wake.fire()
        else:
            # One way, like every delivery between nodes: a full channel on the receiving
            # node drops the message there and counts it (dropped_channel_full), as
            # group_send does; it does not raise ChannelFull here (README, layer section).
            await runtime.call(runtime.send_remote(node, channel, expires_at, data))

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel, receive=True)
        node = node_of_channel(channel)
        if node is None:
            return await self.runtime.plain.receive(channel)
        if node != self.runtime.require_node():
            raise ValueError(f"channel {channel!r} lives on node {node!r}, not on {self.node!r}")
        self.runtime.ensure_started()
        return await self.runtime.local.receive(channel, self.get_capacity(channel))

    async def new_channel(self, prefix: str = "specific") -> str:
        node = self.runtime.require_node()
        self.runtime.ensure_started()
        name = f"{prefix}.{node}!{uuid.uuid4().hex}"
        self.runtime.local.get(name, self.get_capacity(name))
        return name

    # ------------------------------------------------------------------------- groups
    async def group_add(self, group: str, channel: str) -> None:
        """Any process may add any channel: a process channel's membership is held by its
        own node, a plain channel's by the group's owner (channel_layer.membership)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._change_membership("add", group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._change_membership("discard", group, channel)

    async def _change_membership(self, op: str, group: str, channel: str) -> None:
        runtime = self.runtime
        node = node_of_channel(channel)
        if node is None:
            change = runtime.plain_membership(group, channel, joined=op == "add")
        elif node == self.node:
            change = runtime.group_add(group, channel) if op == "add" else \
                runtime.group_discard(group, channel)
        else:
            change = runtime.change_remote_membership(op, group, channel, node)
        await runtime.call(change)

    async def group_join(self, group: str, channel: str, options: dict | None = None) -> dict:
        """``group_add`` for a channel of this node, with options for the group's owner (a DPS
        extension): ``{"presence": [key, ref, meta]}`` tracks the member's presence until it
        leaves, ``{"recover": [offset, epoch]}`` asks for the broadcasts after a position.
        Returns the owner's answer, given at the join's place in the group's order:
        ``{"presence": state}`` (as JSON text, in Phoenix's format, as it stood just before
        this member; the changes since then follow as ``presence.diff`` messages) and, for a
        group with history,
        ``{"history": {"position": {"offset", "epoch"}, "recovered": bool,
        "messages": [[offset, message], ...]}}``."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        if node_of_channel(channel) != self.node:
            raise ValueError(f"group_join takes a channel of this node ({self.node!r})")
        runtime = self.runtime
        response = await runtime.call(runtime.group_join(group, channel, options or {}))
        history = response.get("history")
        if history:
            history["messages"] = [[offset, wire.decode_message(data)]
                                   for offset, data in history["messages"]]
        return response

    def history_policy(self, group: str) -> HistoryPolicy | None:
        """``group``'s history size and ttl at its owner (None: no ``history`` pattern)."""
        return self._history.policy_of(group)

    def has_history(self, group: str) -> bool:
        """Whether ``group``'s owner keeps its broadcasts (a ``history`` pattern matches)."""
        return self._history.policy_of(group) is not None

    async def group_presence(self, group: str) -> dict:
        """The presence state at ``group``'s owner, in Phoenix's format (a DPS extension)."""
        self.require_valid_group_name(group)
        runtime = self.runtime
        return await runtime.call(runtime.query_owner("presence", group))

    async def group_history(self, group: str, since: int = 0) -> dict | None:
        """The broadcasts ``group``'s owner keeps after offset ``since``, oldest first:
        ``{"position": {...}, "messages": [[offset, message], ...]}``; None when the group has
        no history or the owner has not loaded it (a DPS extension)."""
        self.require_valid_group_name(group)
        runtime = self.runtime
        answer = await runtime.call(runtime.query_owner("history", group, int(since)))
        if answer is not None:
            answer["messages"] = [[o, wire.decode_message(d)] for o, d in answer["messages"]]
        return answer

    async def group_send(self, group: str, message: dict) -> None:
        """Never raises ChannelFull: members that are full drop the message (counted)."""
        self.require_valid_group_name(group)
        expires_at, data = self._encode(message)
        await self.runtime.call(self.runtime.group_send(group, expires_at, data))

    def add_fastlane(self, channel: str, deliver: Callable[[dict], None]) -> None:
        """Hand group messages for ``channel`` to ``deliver`` on the calling loop, instead of
        queueing them for ``receive`` (a DPS extension; ``send`` still queues). ``deliver``
        runs once per message, must not block, and must treat the message as read-only:
        members of one node share it."""
        self.runtime.local.add_fastlane(channel, Fastlane(asyncio.get_running_loop(), deliver))

    def remove_fastlane(self, channel: str) -> None:
        self.runtime.local.remove_fastlane(channel)

    # --------------------------------------------------------------------- extensions
    async def flush(self) -> None:
        """Empty the whole layer, every node's groups and queued messages included."""
        runtime = self.runtime
        await runtime.call(runtime.flush())

    async def close(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            await release_runtime(runtime)

    def __repr__(self) -> str:
        return f"<DPSChannelLayer node={self.node} cluster={len(self.cluster.nodes)} nodes>"


__all__ = ["DPSChannelLayer"]
