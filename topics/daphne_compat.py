"""Make daphne (autobahn) answer protocol errors with the close codes of the README.

- autobahn refuses to *send* any close code but 1000 and 3000-4999, although RFC 6455 §7.4.1
  defines 1003 (unsupported data), 1007 (invalid payload) and 1009 (message too big) for
  exactly the cases where DPS closes a socket. Without this, such a close raises inside the
  application and the client sees 1011.
- autobahn's servers "fail by drop" by default: a text frame that is not UTF-8, or a frame over
  daphne's ``--websocket-max-frame-size``, ends in a TCP reset with no close frame. With
  ``failByDrop`` off it sends 1007 and 1009 and then closes.

Other ASGI servers (uvicorn) need nothing of this (see ``topics.uvicorn_compat``).
"""
from __future__ import annotations

# Codes a server may send (RFC 6455 §7.4.1); 1004-1006 and 1015 are never on the wire.
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                1013, 1014})


def allow_protocol_close_codes() -> None:
    try:
        from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
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

    factory_init = WebSocketFactory.__init__

    def init_closing_with_codes(self, *args, **kwargs):
        factory_init(self, *args, **kwargs)
        self.setProtocolOptions(failByDrop=False)

    WebSocketFactory.__init__ = init_closing_with_codes
