"""daphne's two housekeeping scans, made to visit only the connections that have something due.

daphne's ``Server`` walks every connection once a second (``application_checker``: reap
finished applications, kill those that outlive ``application_close_timeout`` after a
disconnect) and every two seconds (``timeout_checker``: each protocol's ``check_timeouts``,
which sends the auto-ping to a WebSocket silent for ``ping_interval``). With 10,000 idle
sockets those scans were a third of an idle node's CPU, for nothing due on almost every visit.

Same rules, same one- and two-second ticks, fewer visits:

- ``application_checker`` visits only the connections whose application finished or whose
  client disconnected (a done-callback and ``protocol_disconnected`` mark them);
- ``timeout_checker`` visits an open WebSocket when its next deadline comes (its auto-ping
  ``last_ping + ping_interval``, its ``websocket_timeout``), from a heap; ``last_ping`` only
  moves later (daphne sets it on every received message), so an entry that comes due early is
  checked and put back at its new deadline. Every other connection (HTTP, long-poll requests, a
  handshake in progress) is still checked on every tick, a new one from ``protocol_connected``
  on. (Even a walk over every connection costs: daphne's protocols hash in Python.)
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
import weakref
from typing import Any

from topics.transport import ws_counters

logger = logging.getLogger("daphne.server")  # daphne's own logger, as its checker logs
_sequence = itertools.count()  # a heap tie-breaker: protocols do not compare


def visit_only_due_connections() -> None:
    """Replace daphne's scans."""
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    _patch_application_checker(Server)
    _patch_timeout_checker(Server, WebSocketProtocol)


def _due(server: Any) -> set:
    due = server.__dict__.get("_dps_app_due")
    if due is None:
        due = server._dps_app_due = set()
    return due


def _patch_application_checker(server_class: Any) -> None:
    create_application = server_class.create_application
    protocol_disconnected = server_class.protocol_disconnected

    def create_application_marked(self, protocol, scope):
        queue = create_application(self, protocol, scope)
        instance = self.connections.get(protocol, {}).get("application_instance")
        if instance is not None:
            due = _due(self)
            instance.add_done_callback(lambda _instance: due.add(protocol))
        return queue

    def protocol_disconnected_marked(self, protocol):
        protocol_disconnected(self, protocol)
        _due(self).add(protocol)

    def application_checker(self):
        """daphne's ``application_checker``, rule for rule, over the marked connections."""
        from twisted.internet import reactor

        due = _due(self)
        for protocol in list(due):
            details = self.connections.get(protocol)
            if details is None:
                due.discard(protocol)
                continue
            if _check_application(self, protocol, details):
                del self.connections[protocol]
                due.discard(protocol)
            elif details.get("disconnected") is None and "application_instance" not in details:
                due.discard(protocol)  # reaped; marked again when its client disconnects
        reactor.callLater(1, self.application_checker)

    server_class.create_application = create_application_marked
    server_class.protocol_disconnected = protocol_disconnected_marked
    server_class.application_checker = application_checker


def _check_application(server: Any, protocol: Any, details: dict) -> bool:
    """One connection of daphne's check; True when the connection is to be forgotten."""
    disconnected = details.get("disconnected", None)
    instance = details.get("application_instance", None)
    if disconnected and time.time() - disconnected > server.application_close_timeout:
        if instance and not instance.done():
            logger.warning("Application instance %r for connection %s took too long to shut "
                           "down and was killed.", instance, repr(protocol))
            instance.cancel()
    if instance and instance.done():
        try:
            exception = instance.exception()
        except asyncio.CancelledError:
            pass
        else:
            if exception:
                if isinstance(exception, KeyboardInterrupt):
                    server.stop()  # the protocol asks the server to exit (daphne's rule)
                else:
                    logger.error("Exception inside application: %s", exception,
                                 exc_info=exception)
                    if not disconnected:
                        protocol.handle_exception(exception)
        del details["application_instance"]
        instance = None
    return not instance and bool(disconnected)


def _patch_timeout_checker(server_class: Any, websocket_class: Any) -> None:
    protocol_connected = server_class.protocol_connected

    def protocol_connected_marked(self, protocol):
        protocol_connected(self, protocol)
        _timeouts(self).every_tick.add(protocol)  # until it is an open WebSocket

    def timeout_checker(self):
        """daphne's ``timeout_checker``: ``check_timeouts`` of each connection with something
        due, every two seconds."""
        from twisted.internet import reactor

        ws_counters.COUNTS.daphne_scan_ticks += 1
        timeouts = _timeouts(self)
        connections = self.connections
        visit = timeouts.every_tick
        timeouts.every_tick = set()
        heap = timeouts.heap
        now = time.time()
        while heap and heap[0][0] <= now:
            protocol = heapq.heappop(heap)[2]()
            if protocol is not None:
                visit.add(protocol)
        for protocol in visit:
            if protocol not in connections:
                continue  # gone: forgotten here too
            protocol.check_timeouts()
            due = _next_check(self, protocol, websocket_class)
            if due is None:
                timeouts.every_tick.add(protocol)
            else:
                # A weak reference: a connection that goes away is not kept until its
                # deadline (with a long ping interval, minutes).
                heapq.heappush(heap, (due, next(_sequence), weakref.ref(protocol)))
        reactor.callLater(2, self.timeout_checker)

    server_class.protocol_connected = protocol_connected_marked
    server_class.timeout_checker = timeout_checker


class _Timeouts:
    """A server's connections by when they are next checked: open WebSockets in a heap by
    deadline, the others (HTTP, handshakes, closing sockets) on every tick."""

    __slots__ = ("heap", "every_tick")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, weakref.ref]] = []
        self.every_tick: set = set()


def _timeouts(server: Any) -> _Timeouts:
    timeouts = server.__dict__.get("_dps_timeouts")
    if timeouts is None:
        timeouts = server._dps_timeouts = _Timeouts()
    return timeouts


def _next_check(server: Any, protocol: Any, websocket_class: Any) -> float | None:
    """When ``protocol`` next has something due; None: check it on every tick."""
    if not isinstance(protocol, websocket_class) or protocol.state != protocol.STATE_OPEN:
        return None  # HTTP, a handshake (its connect timeout), a closing socket
    due = protocol.last_ping + server.ping_interval
    if server.websocket_timeout >= 0:
        due = min(due, protocol.socket_opened + server.websocket_timeout)
    return due
