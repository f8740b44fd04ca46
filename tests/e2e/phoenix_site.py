"""The site the phoenix.js client tests run (``tests/e2e/test_phoenix_clients.py``): the test
settings, plus ``fidelity:*`` topics served by :class:`FidelityTopic`, with presence.

Its handler does, on a client's push, what a Phoenix channel module would: crash, update the
pusher's presence, or disconnect the pusher's sockets. Settings name it by its dotted path, so
this module is imported by the nodes only once Django is set up.
"""
from __future__ import annotations

from typing import Any

from topics import api
from topics.hooks.handlers import Reply, SocketContext, TopicHandler


class FidelityTopic(TopicHandler):
    client_events = True  # channel.push(event, payload), Phoenix's idiom

    async def join(self, socket: SocketContext, topic: str, payload: Any) -> None:
        if isinstance(payload, dict) and payload.get("crash"):
            raise RuntimeError("FidelityTopic.join crashed on purpose")
        self.topic = topic

    async def handle_in(self, socket: SocketContext, event: str,
                        payload: dict[str, Any]) -> Reply | None:
        if event == "crash":
            raise RuntimeError("FidelityTopic.handle_in crashed on purpose")
        if event == "status":  # Phoenix: Presence.update(socket, key, %{status: ...})
            await api.apresence_update(socket.identity, self.topic,
                                       {"status": payload["status"]})
            return Reply({})
        if event == "disconnect_me":  # Phoenix: Endpoint.broadcast(id, "disconnect", %{})
            await api.adisconnect(socket.identity)
            return Reply({})
        return None
