"""Let daphne send the close codes the Phoenix socket uses for protocol errors.

autobahn (under daphne) refuses to *send* any close code but 1000 and 3000-4999, although
RFC 6455 §7.4.1 defines 1003 (unsupported data), 1007 (invalid payload) and 1009 (message too
big) for exactly the cases where DPS closes a socket. Without this, such a close raises inside
the application and the client sees 1011. Other ASGI servers (uvicorn) need nothing.
"""
from __future__ import annotations

# Codes a server may send (RFC 6455 §7.4.1); 1004-1006 and 1015 are never on the wire.
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                1013, 1014})


def allow_protocol_close_codes() -> None:
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # not running under daphne
        return
    if getattr(WebSocketProtocol.serverClose, "dps_compatible", False):
        return
    original = WebSocketProtocol.serverClose

    def server_close(self, code=None):
        if code in SERVER_CLOSE_CODES and code != 1000:
            self.sendCloseFrame(code=code, isReply=False)  # what sendClose does after its check
        else:
            original(self, code)

    server_close.dps_compatible = True
    WebSocketProtocol.serverClose = server_close
