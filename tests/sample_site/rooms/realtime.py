"""The rooms' topic handler: ``rooms:NAME`` may be joined by the room's members only."""
from __future__ import annotations

from typing import Any

from topics.hooks.handlers import Broadcast, Refuse, TopicHandler

from .models import Room


class RoomTopic(TopicHandler):
    def join(self, socket, topic: str, payload: Any) -> dict[str, Any]:
        # Sync: DPS runs it off the event loop, so the ORM is fine here.
        name = topic.split(":", 1)[1]
        if socket.identity.is_anonymous or not Room.objects.filter(
                name=name, members__pk=socket.identity.user_id).exists():
            raise Refuse()  # {"reason": "unauthorized"}
        socket.assigns["room"] = name
        return {"room": name}

    def handle_in(self, socket, event: str, payload: dict[str, Any]) -> Broadcast | None:
        if event == "crash":
            raise RuntimeError("RoomTopic crashed on purpose")
        if event == "say":
            # Every member sees who said it, and the text as the site wants it shown.
            return Broadcast({"text": str(payload.get("text", "")).strip(),
                              "from": socket.identity.user_id})
        return None
