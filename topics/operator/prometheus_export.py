"""Prometheus metrics of a node, in the text format, from ``prometheus-client``.

A WS node serves them at ``/metrics`` on its HTTP port (``topics.operator.views.metrics``); a topic
server on its ``--metrics-port`` (:func:`serve_metrics`). The collectors read the counters the
node keeps anyway (the layer's, the topic server's, :mod:`topics.transport.ws_counters`) at scrape time, so
counting costs the hot path nothing more. Who may read them (:func:`refusal`): with
``DPS_METRICS_TOKEN`` set, a scrape with ``Authorization: Bearer <token>`` (compared in constant
time), others get 401; without a token, anyone when ``DPS_METRICS_PUBLIC`` is on (by default:
when DEBUG is on), and no one otherwise (403).

Metric names (every one labelled ``node``): ``dps_connections``, ``dps_joins_total``,
``dps_publishes_total``, ``dps_deliveries_total`` (WS: frames to members; TS: one per WS node
per publish), ``dps_publish_deliver_latency_seconds`` (WS), ``dps_inbox_backlog``,
``dps_dropped_total{reason}``, ``dps_slow_client_disconnects_total``,
``dps_redis_errors_total``, the server patches' ``dps_direct_frame_fallbacks_total``,
``dps_direct_receive_fallbacks_total``, ``dps_direct_receive_frames_total``,
``dps_daphne_scan_ticks_total`` and ``dps_server_patch_fallbacks_total``; a topic server adds
``dps_topics``, ``dps_members`` and ``dps_ws_nodes``.
"""
from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.exceptions import RedisError

from channel_layer.layer import DPSChannelLayer
from channel_layer.topic_server import TopicServer
from topics.operator.node_report import copied, layer_counters
from topics.transport import connections, ws_counters

# Layer / topic-server counters that count a message dropped, by the reason label they get.
DROP_REASONS = {
    "dropped_channel_full": "channel_full",
    "dropped_unknown_node": "unknown_node",
    "dropped_plain_channel_unreachable": "unreachable",
    "sends_after_close": "client_gone",
    "longpoll_closed_buffer_full": "longpoll_buffer_full",
    "expired": "expired",
    "group_deliveries_without_members": "no_members",
    "published_no_members": "no_members",
    "malformed_envelopes": "malformed",
    "unknown_envelopes": "unknown_envelope",
    "backlog_discarded_at_start": "previous_process",
    # Failover (channel_layer.sequencing): copies of publishes that were re-sent, dropped so
    # each is delivered once; and publishes that can no longer be re-sent.
    "duplicates_dropped": "duplicate",
    "publishes_superseded": "superseded",
    "discarded_after_lapse": "after_lease_lapse",
    "unacked_overflow": "replay_log_full",
}
# Events each counted by a counter of its own (dps_<name>_total): failover and ring changes,
# and a handler's bug.
FAILOVER_COUNTERS = {
    "failovers": "Topic servers this node took out of its ring (lease lapsed)",
    "publishes_resent": "Publishes re-sent to a restarted server or to new owners",
    "lease_lapses": "Times this topic server found its lease lapsed and rejoined",
    "publishes_forwarded": "Publishes forwarded to the owner (sent by a node behind the ring)",
    "groups_handed_over": "Groups forgotten after a ring change settled (owned elsewhere now)",
    "envelope_handler_errors": "Inbox envelopes whose handler raised: a bug (logged with its "
                               "traceback), not bad input",
}
# Counters of failed Redis operations (reading the inbox, writing stats).
REDIS_ERRORS = ("inbox_read_errors", "stats_write_errors", "report_errors")
BACKLOG_TIMEOUT = 0.5  # seconds for the XLEN of the node's backlog at scrape time


CLOSED = (b"metrics are closed: set DPS_METRICS_TOKEN (and scrape with it as a bearer token), "
          b"or DPS_METRICS_PUBLIC=1 to open them on purpose\n")
BEARER_REQUIRED = b"a bearer token is required\n"


def _bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                              token.encode())


def refusal(header: str | None, token: str | None, public: bool) -> int | None:
    """None when a scrape with this Authorization ``header`` may read the metrics, else the
    HTTP status that refuses it: 401 without the bearer ``token`` when one is set; 403 when
    none is set and the metrics are not ``public``."""
    if token:
        return None if _bearer_matches(header, token) else 401
    return None if public else 403


def access_settings() -> tuple[str, bool]:
    """``DPS_METRICS_TOKEN`` and ``DPS_METRICS_PUBLIC`` (unset: DEBUG) from Django's settings."""
    from django.conf import settings

    public = getattr(settings, "DPS_METRICS_PUBLIC", None)
    return (getattr(settings, "DPS_METRICS_TOKEN", "") or "",
            bool(settings.DEBUG if public is None else public))


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _counter(name: str, doc: str, node: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["node"])
    family.add_metric([node], value)
    return family


def _gauge(name: str, doc: str, node: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["node"])
    family.add_metric([node], value)
    return family


def _drops(node: str, counters: Mapping[str, int], extra: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily("dps_dropped", "Messages dropped, by reason",
                                 labels=["node", "reason"])
    by_reason: dict[str, int] = dict(extra)
    for counter, reason in DROP_REASONS.items():
        by_reason[reason] = by_reason.get(reason, 0) + counters.get(counter, 0)
    for reason, value in sorted(by_reason.items()):
        family.add_metric([node, reason], value)
    return family


def _failover(node: str, counters: Mapping[str, int]) -> Iterator[Metric]:
    for name, doc in FAILOVER_COUNTERS.items():
        yield _counter(f"dps_{name}", doc, node, counters.get(name, 0))


class _Backlog:
    """The length of a node's inbox backlog stream, read at scrape time."""

    def __init__(self, url: str | None) -> None:
        self._client = None if url is None else redis.Redis.from_url(
            url, socket_connect_timeout=BACKLOG_TIMEOUT, socket_timeout=BACKLOG_TIMEOUT)
        self.errors = 0

    def depth(self, key: str | None) -> int | None:
        if self._client is None or key is None:
            return 0
        try:
            return int(self._client.xlen(key))
        except (RedisError, OSError):
            self.errors += 1
            return None


def _common(node: str, counters: Mapping[str, int], backlog: _Backlog,
            key: str | None, extra_errors: int = 0) -> Iterator[Metric]:
    depth = backlog.depth(key)
    if depth is not None:
        yield _gauge("dps_inbox_backlog", "Envelopes waiting in this node's inbox backlog",
                     node, depth)
    yield _counter("dps_redis_errors", "Failed Redis operations", node,
                   sum(counters.get(name, 0) for name in REDIS_ERRORS) + backlog.errors
                   + extra_errors)


class WsNodeCollector:
    """The figures of this WS process (its layer, its sockets)."""

    def __init__(self, layer: DPSChannelLayer | None) -> None:
        self.layer = layer
        url = None
        if layer is not None and layer.node is not None and not layer.cluster.embedded:
            url = layer.cluster.node(layer.node).redis_url
        self._backlog = _Backlog(url)

    def collect(self) -> Iterator[Metric]:
        layer = self.layer
        node = (layer.node if layer is not None else None) or "local"
        counters = layer_counters(layer) if layer is not None else ws_counters.COUNTS.as_dict()
        yield _gauge("dps_connections", "Open WebSocket connections", node,
                     connections.open_sockets())
        for name, doc in (("joins", "Topic joins accepted"),
                          ("publishes", "Publishes accepted from clients"),
                          ("deliveries", "Broadcast frames handed to members"),
                          ("channel_crashes",
                           "Topic handlers that raised: the join refused or the channel left"),
                          ("presence_update_errors",
                           "Presence updates not passed to the topic's owner (old meta kept)"),
                          ("slow_client_disconnects", "Clients closed with 1013 for a backlog"),
                          ("direct_frame_fallbacks",
                           "Connections whose broadcasts fell back to ASGI send"),
                          ("direct_receive_fallbacks",
                           "Connections whose client frames fell back to the server's parser"),
                          ("direct_receive_frames", "Client frames read by the direct path"),
                          ("daphne_scan_ticks", "Ticks of daphne's due-only housekeeping scans"),
                          ("server_patch_fallbacks",
                           "Server patches off: the server's version is outside their window")):
            yield _counter(f"dps_{name}", doc, node, counters.get(name, 0))
        yield _drops(node, counters, {"slow_client": counters.get("slow_client_disconnects", 0)})
        yield from _failover(node, counters)
        histogram = HistogramMetricFamily(
            "dps_publish_deliver_latency_seconds",
            "Publisher's timestamp to delivery at this node, per delivered frame",
            labels=["node"])
        histogram.add_metric([node], [(_bound(b), c) for b, c in ws_counters.LATENCY.cumulative()],
                             ws_counters.LATENCY.sum)
        yield histogram
        transport = layer.runtime.transport if layer is not None else None
        key = transport.inbox_key(node) if transport is not None else None
        yield from _common(node, counters, self._backlog, key,
                           counters.get("join_errors", 0) + counters.get("publish_errors", 0))


class TopicServerCollector:
    """The figures of one topic server (read from its metrics thread)."""

    def __init__(self, server: TopicServer) -> None:
        self.server = server
        self._backlog = _Backlog(server.cluster.node(server.node).redis_url)

    def collect(self) -> Iterator[Metric]:
        server = self.server
        node = server.node
        counters = copied(server.counters)
        for name, value in copied(server.transport.counters).items():
            counters[name] = counters.get(name, 0) + value
        groups = list(server.groups.values())
        yield _gauge("dps_topics", "Groups this topic server owns with members", node,
                     len(groups))
        yield _gauge("dps_members", "Members of its groups (local counts of every WS node)",
                     node, sum(sum(g.members.values()) for g in groups))
        yield _gauge("dps_ws_nodes", "WS nodes this topic server hears from", node,
                     len(server.ws_nodes))
        yield _counter("dps_publishes", "Publishes received", node, counters.get("published", 0))
        yield _counter("dps_deliveries", "Deliveries sent, one per WS node with members", node,
                       counters.get("node_deliveries", 0))
        yield _drops(node, counters, {})
        yield from _failover(node, counters)
        yield from _common(node, counters, self._backlog, server.transport.inbox_key(node))


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def registry_for(collector: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        pass  # one line per scrape would drown the node's log


def metrics_wsgi_app(registry: CollectorRegistry, token: str | None,
                     public: bool = False) -> Callable:
    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: metrics are at /metrics\n"]
        status = refusal(environ.get("HTTP_AUTHORIZATION"), token, public)
        if status == 401:
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="metrics"')])
            return [BEARER_REQUIRED]
        if status == 403:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [CLOSED]
        body, content_type = render(registry)
        start_response("200 OK", [("Content-Type", content_type)])
        return [body]
    return app


def serve_metrics(registry: CollectorRegistry, host: str, port: int,
                  token: str | None, public: bool = False) -> WSGIServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread, to whom
    :func:`refusal` lets in."""
    server = make_server(host, port, metrics_wsgi_app(registry, token, public),
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="dps-metrics", daemon=True).start()
    return server
