"""Make daphne (autobahn) answer protocol errors with the close codes of the README.

- autobahn refuses to *send* any close code but 1000 and 3000-4999, although RFC 6455 §7.4.1
  defines 1003 (unsupported data), 1007 (invalid payload) and 1009 (message too big) for
  exactly the cases where DPS closes a socket. Without this, such a close raises inside the
  application and the client sees 1011.
- autobahn's servers "fail by drop" by default: a text frame that is not UTF-8, or a frame over
  daphne's ``--websocket-max-frame-size``, ends in a TCP reset with no close frame. With
  ``failByDrop`` off it sends 1007 and 1009 and then closes.
- a client's invalid close frame still ended in a reset (the close frame autobahn wrote was
  discarded by an abort); it gets its 1002 or 1007, as under uvicorn.

- daphne reads a socket without limit: whatever a client sends faster than its consumer
  handles waits in the application's queue (2,000 publishes of 50 KB: +85 MB). Past
  ``DPS_MAX_INBOUND_BUFFER_BYTES`` queued, the connection stops reading until the consumer has
  taken half of it (TCP backpressure on the client, as uvicorn applies after every message).

Each function is one patch of ``topics.adapters.registry`` (its own switch and version window).
Other ASGI servers (uvicorn) need nothing of this (see ``topics.adapters.uvicorn_log``).
"""
from __future__ import annotations

from typing import Any

DEFAULT_MAX_INBOUND_BUFFER_BYTES = 1024 * 1024

# Codes a server may send (RFC 6455 §7.4.1); 1004-1006 and 1015 are never on the wire.
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                1013, 1014})


def allow_protocol_close_codes() -> None:
    """Let daphne's ``websocket.close`` send 1002-1003 and 1007-1014 (autobahn's ``sendClose``
    allows only 1000 and 3000-4999)."""
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.serverClose

    def server_close(self, code=None):
        if code in SERVER_CLOSE_CODES and code != 1000:
            self.sendCloseFrame(code=code, isReply=False)  # what sendClose does after its check
        else:
            original(self, code)

    WebSocketProtocol.serverClose = server_close


def close_instead_of_dropping() -> None:
    """autobahn answers a protocol error with a close frame (1002, 1007, 1009) instead of a
    TCP reset."""
    from daphne.ws_protocol import WebSocketFactory

    factory_init = WebSocketFactory.__init__

    def init_closing_with_codes(self, *args, **kwargs):
        factory_init(self, *args, **kwargs)
        self.setProtocolOptions(failByDrop=False)

    WebSocketFactory.__init__ = init_closing_with_codes


def answer_invalid_close_frames() -> None:
    """A client's invalid close frame (code 999, 1005, 5000, a 1-byte payload, a reason that is
    not UTF-8) gets autobahn's 1002 or 1007 close frame before the TCP close, as uvicorn does.

    autobahn (``failByDrop`` off) sends that close frame, then takes the client's close frame
    for the reply to it and aborts the connection, which discards the close frame still in
    Twisted's write buffer: the client saw a reset and no code. A connection that failed
    itself (``failedByMe``) is dropped after its buffer is written instead.
    """
    from daphne.ws_protocol import WebSocketProtocol

    drop = WebSocketProtocol.dropConnection

    def drop_connection(self, abort=False):
        drop(self, abort=abort and not self.failedByMe)

    WebSocketProtocol.dropConnection = drop_connection


def _message_size(message: dict[str, Any]) -> int:
    return len(message.get("bytes") or message.get("text") or b"")


def apply_inbound_backpressure() -> None:
    """Past ``DPS_MAX_INBOUND_BUFFER_BYTES`` queued for its consumer, a connection stops
    reading until the consumer took half of it."""
    from daphne.ws_protocol import WebSocketProtocol as protocol_class
    from django.conf import settings

    limit = int(getattr(settings, "DPS_MAX_INBOUND_BUFFER_BYTES",
                        DEFAULT_MAX_INBOUND_BUFFER_BYTES))
    on_message = protocol_class.onMessage

    def on_message_with_backpressure(self, payload, isBinary):
        meter = self.__dict__.get("_dps_inbound")
        if meter is None:
            meter = self._dps_inbound = _InboundMeter(self, limit)
        on_message(self, payload, isBinary)
        meter.received(len(payload))

    protocol_class.onMessage = on_message_with_backpressure


class _InboundMeter:
    """Bytes a connection queued for its consumer; pauses and resumes the socket's reading.

    The consumer takes messages with the queue's ``get``, which ends in ``get_nowait``: that
    one method is wrapped on this connection's queue to see what leaves it.
    """

    def __init__(self, protocol: Any, limit: int) -> None:
        self.protocol = protocol
        self.limit = limit
        self.queued = 0
        self.paused = False
        queue = protocol.application_queue
        take = queue.get_nowait

        def get_nowait() -> dict[str, Any]:
            message = take()
            # Text is counted in characters here and in bytes on arrival: an empty queue
            # resets the count, so the difference can never keep a connection paused.
            self.taken(_message_size(message) if queue.qsize() else self.queued)
            return message

        queue.get_nowait = get_nowait

    def received(self, size: int) -> None:
        self.queued += size
        if not self.paused and self.queued > self.limit:
            self.paused = True
            self.protocol.transport.pauseProducing()

    def taken(self, size: int) -> None:
        self.queued = max(0, self.queued - size)
        if self.paused and self.queued <= self.limit // 2:
            self.paused = False
            self.protocol.transport.resumeProducing()
