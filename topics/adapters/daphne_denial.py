"""daphne answers a refused WebSocket handshake with the application's HTTP status.

ASGI's "WebSocket Denial Response" extension (``websocket.http.response``, which
``topics.transport.handshake.refuse`` uses for 429 and 503) is implemented by uvicorn, not by
daphne, whose clients would all see 403. Here daphne's scope advertises the extension, and the
response's status and body reach the client through autobahn's ``ConnectionDeny``.
"""
from __future__ import annotations

from topics.transport.handshake import DENIAL_EXTENSION


def enable_daphne_denial_response() -> None:
    """Make daphne advertise and honour the denial-response extension."""
    from autobahn.websocket.types import ConnectionDeny
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    original_create, original_reply = Server.create_application, WebSocketProtocol.handle_reply

    def create_application(self, protocol, scope):
        if scope.get("type") == "websocket":
            scope.setdefault("extensions", {}).setdefault(DENIAL_EXTENSION, {})
        return original_create(self, protocol, scope)

    def handle_reply(self, message):
        kind = message.get("type")
        if kind == "websocket.http.response.start" and self.state == self.STATE_CONNECTING:
            self.dps_denial_status = message["status"]
        elif kind == "websocket.http.response.body" and hasattr(self, "dps_denial_status"):
            if not message.get("more_body") and hasattr(self, "handshake_deferred"):
                reason = bytes(message.get("body", b"")).decode("utf-8", "replace")
                self.handshake_deferred.errback(
                    ConnectionDeny(code=self.dps_denial_status, reason=reason or "Refused"))
                del self.handshake_deferred
                self.server.protocol_disconnected(self)
        else:
            original_reply(self, message)

    Server.create_application = create_application
    WebSocketProtocol.handle_reply = handle_reply
