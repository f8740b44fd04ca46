"""``LocalBroadcastLayer``: the benchmark's "no layer" baseline, an in-process broadcast.

A minimal Channels layer for ONE process: group -> set of channel names, one bounded deque per
channel with at most one waiting receiver. ``group_send`` hands the *same* message object to
every member (no encoding, no copy, no expiry), so a benchmark over it measures what the WS
server itself costs per delivery. It is not a production layer: nothing leaves the process,
and a channel's (empty) queue lives as long as the layer.

Selected by the benchmark's ``topics.devtools.benchmark.settings_local``.
"""
from __future__ import annotations

import asyncio
import uuid
from collections import deque
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

DEFAULT_CAPACITY = 100_000  # "generous": the baseline should never be the one that drops


class _Channel:
    __slots__ = ("queue", "waiter")

    def __init__(self) -> None:
        self.queue: deque[dict] = deque()
        self.waiter: asyncio.Future | None = None


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LocalBroadcastLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(self, capacity: int = DEFAULT_CAPACITY, **kwargs: Any) -> None:
        kwargs.pop("expiry", None)  # accepted for config compatibility; nothing expires here
        kwargs.pop("group_expiry", None)
        super().__init__(capacity=capacity, **kwargs)
        self.channels: dict[str, _Channel] = {}
        self.groups: dict[str, set[str]] = {}

    def _channel(self, name: str) -> _Channel:
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = _Channel()
        return channel

    def _put(self, name: str, message: dict) -> bool:
        channel = self._channel(name)
        if len(channel.queue) >= self.capacity:
            return False
        channel.queue.append(message)
        waiter = channel.waiter
        if waiter is not None and not waiter.done():
            loop = waiter.get_loop()
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:
                waiter.set_result(None)
            elif not loop.is_closed():  # a receiver on another loop (async_to_sync)
                loop.call_soon_threadsafe(_wake, waiter)
        return True

    # ----------------------------------------------------------------------- channels
    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        if not self._put(channel, message):
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel)
        local = self._channel(channel)
        while not local.queue:
            # Cancellation-safe: a message stays queued until a receive() returns it.
            waiter = local.waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if local.waiter is waiter:
                    local.waiter = None
        return local.queue.popleft()

    async def new_channel(self, prefix: str = "specific") -> str:
        name = f"{prefix}.local!{uuid.uuid4().hex}"
        self._channel(name)
        return name

    # ------------------------------------------------------------------------- groups
    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self.groups.setdefault(group, set()).add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        members = self.groups.get(group)
        if members is not None:
            members.discard(channel)
            if not members:
                del self.groups[group]

    async def group_send(self, group: str, message: dict) -> None:
        """The same object to every member; a full member misses it (like other layers)."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        for name in tuple(self.groups.get(group, ())):
            self._put(name, message)

    # --------------------------------------------------------------------- extensions
    async def flush(self) -> None:
        self.channels.clear()
        self.groups.clear()

    async def close(self) -> None:
        pass
