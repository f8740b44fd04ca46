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


class Command(BaseCommand):
    help = "Run a DPS topic server (the node named by DPS_NODE, role 'ts')."

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
        asyncio.run(self._serve(cluster, name, layer_settings))

    async def _serve(self, cluster, name: str, layer_settings: LayerSettings) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        transport = RedisTransport(cluster, layer_settings.prefix, layer_settings.inbox_cap,
                                   layer_settings.connect_timeout)
        server = TopicServer(cluster, name, transport, layer_settings)
        self.stdout.write(f"{ts_serving_line(name)} (Redis {cluster.node(name).redacted_url})")
        self.stdout.flush()
        try:
            await server.run(stop)
        finally:
            await transport.close()
