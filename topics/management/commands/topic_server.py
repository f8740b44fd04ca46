"""``DPS_NODE=ts-a python manage.py topic_server``: run this process as a topic server."""
from __future__ import annotations

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from channel_layer.cluster import (
    TS,
    ClusterConfigError,
    current_node_name,
    load_cluster,
    ts_serving_line,
)
from channel_layer.settings import LayerSettings
from channel_layer.startup import check_reachable
from channel_layer.topic_server import TopicServer
from channel_layer.transport import RedisTransport
from topics.operator.prometheus_export import (
    TopicServerCollector,
    access_settings,
    registry_for,
    serve_metrics,
)


class Command(BaseCommand):
    help = "Run a DPS topic server (the node named by DPS_NODE, role 'ts')."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--metrics-port", type=int, default=0,
                            help="serve Prometheus metrics at http://HOST:PORT/metrics "
                                 "(default 0: no metrics endpoint)")
        parser.add_argument("--metrics-host", default="127.0.0.1",
                            help="address of the metrics endpoint (default 127.0.0.1)")

    def handle(self, *args, **options) -> None:
        try:
            cluster = load_cluster(getattr(settings, "DPS_CLUSTER", None))
            if cluster.embedded:
                raise ClusterConfigError(
                    "no cluster is configured (set DPS_CLUSTER to a cluster file); the embedded "
                    "development cluster runs its topic server inside the WS process")
            name = current_node_name(cluster, getattr(settings, "DPS_NODE", None))
            if name is None:
                raise ClusterConfigError("DPS_NODE is not set: say which topic server this is")
            if cluster.node(name).role != TS:
                raise ClusterConfigError(f"node {name!r} has role 'ws', not 'ts'")
            check_reachable(cluster)
        except ClusterConfigError as exc:
            raise CommandError(str(exc)) from None
        layer_config = settings.CHANNEL_LAYERS.get("default", {}).get("CONFIG", {})
        layer_settings = LayerSettings.from_config(
            {**layer_config, **(getattr(settings, "DPS_LAYER", None) or {})})
        if not 0 <= options["metrics_port"] <= 65535:
            raise CommandError(f"--metrics-port {options['metrics_port']} is not a TCP port")
        asyncio.run(self._serve(cluster, name, layer_settings, options["metrics_host"],
                                options["metrics_port"]))

    async def _serve(self, cluster, name: str, layer_settings: LayerSettings, metrics_host: str,
                     metrics_port: int) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        transport = RedisTransport(cluster, layer_settings.prefix, layer_settings.inbox_cap,
                                   layer_settings.connect_timeout)
        server = TopicServer(cluster, name, transport, layer_settings)
        metrics = self._serve_metrics(server, metrics_host, metrics_port)
        self.stdout.write(f"{ts_serving_line(name)} (Redis {cluster.node(name).redacted_url})")
        self.stdout.flush()
        try:
            await server.run(stop)
        finally:
            if metrics is not None:
                metrics.shutdown()
            await transport.close()

    def _serve_metrics(self, server: TopicServer, host: str, port: int):
        if not port:
            return None
        token, public = access_settings()
        try:
            http = serve_metrics(registry_for(TopicServerCollector(server)), host, port,
                                 token, public)
        except OSError as exc:
            raise CommandError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        access = "bearer token" if token else "open" if public else (
            "closed: set DPS_METRICS_TOKEN, or DPS_METRICS_PUBLIC=1")
        self.stdout.write(f"metrics of {server.node}: http://{host}:{port}/metrics ({access})")
        return http
