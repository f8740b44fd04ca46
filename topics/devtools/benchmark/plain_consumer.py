"""The plain-Channels baseline: what a Django team writes today for rooms over a channel layer.

One ``AsyncJsonWebsocketConsumer`` that speaks the part of the Phoenix V2 JSON protocol the
benchmark uses, the way the Channels tutorial builds a chat room: a join is ``group_add`` and an
``ok`` reply; a publish is ``group_send`` of the payload to the room's group and an ``ok`` reply;
each group message becomes one ``send_json`` to the socket; a heartbeat gets its reply. Nothing
else: no per-socket publish limit, no payload limits, no send buffer bounds, no presence. It is
the honest baseline, not a straw man: every frame is checked by the same load generator for
loss, duplicates and order, so it must be correct for the benchmark to count it.

Frames are ``[join_ref, ref, topic, event, payload]``; a publish's payload is
``[event, object]``; a room's members get ``[join_ref, null, topic, event, object]``.
"""
from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer


def group_name(topic: str) -> str:
    """Channels' group names allow no ``:``; ``topics:NAME`` becomes ``topics.NAME``."""
    return topic.replace(":", ".", 1)


class PlainRoomConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.joined: dict[str, Any] = {}  # topic -> join_ref
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for topic in self.joined:
            await self.channel_layer.group_discard(group_name(topic), self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        join_ref, ref, topic, event, payload = content
        if topic == "phoenix" and event == "heartbeat":
            await self.reply(join_ref, ref, topic, "ok")
        elif event == "phx_join":
            await self.channel_layer.group_add(group_name(topic), self.channel_name)
            self.joined[topic] = join_ref
            await self.reply(join_ref, ref, topic, "ok")
        elif event == "phx_leave" and topic in self.joined:
            del self.joined[topic]
            await self.channel_layer.group_discard(group_name(topic), self.channel_name)
            await self.reply(join_ref, ref, topic, "ok")
        elif event == "publish" and topic in self.joined:
            name, body = payload
            await self.channel_layer.group_send(
                group_name(topic), {"type": "room.message", "topic": topic, "event": name,
                                    "payload": body})
            await self.reply(join_ref, ref, topic, "ok")
        else:
            await self.reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"})

    async def room_message(self, message: dict[str, Any]) -> None:
        topic = message["topic"]
        await self.send_json([self.joined.get(topic), None, topic, message["event"],
                              message["payload"]])

    async def reply(self, join_ref: Any, ref: Any, topic: str, status: str,
                    response: dict | None = None) -> None:
        await self.send_json([join_ref, ref, topic, "phx_reply",
                              {"status": status, "response": response or {}}])
