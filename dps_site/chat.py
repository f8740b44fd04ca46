"""The demo chat's topics, ``rooms:NAME``: Phoenix's idiom, as a site writes it.

Clients ``channel.push("new_msg", {"name", "text"})`` and receive ``new_msg`` broadcasts
(``topics/static/dps/demo.js``). The handler is the one docs/handlers.md shows.
"""
from __future__ import annotations

from typing import Any

from topics.hooks.handlers import Broadcast, SocketContext, TopicHandler

MAX_NAME_CHARS = 32
MAX_TEXT_CHARS = 500


class ChatRoom(TopicHandler):
    client_events = True  # channel.push("new_msg", ...) reaches handle_in, not only "publish"

    # async: it touches no database, so it runs on the event loop (no thread hop per message).
    async def handle_in(self, socket: SocketContext, event: str,
                        payload: dict[str, Any]) -> Broadcast | None:
        if event == "new_msg":
            # Phoenix's broadcast!(socket, "new_msg", ...): every member, the sender too.
            return Broadcast({"name": str(payload.get("name", ""))[:MAX_NAME_CHARS],
                              "text": str(payload.get("text", "")).strip()[:MAX_TEXT_CHARS]})
        return None  # any other event goes out as the client sent it
