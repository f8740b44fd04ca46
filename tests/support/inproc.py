"""In-process helpers for layer tests: a cluster description and topic servers on a thread.

The topic servers run on their own thread and event loop, like a separate process would, so
a test may drive the layer from any loop (async tests, ``async_to_sync``, several threads).
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from channel_layer.cluster import Cluster, parse_cluster
from channel_layer.settings import LayerSettings
from channel_layer.topic_server import TopicServer
from channel_layer.transport import RedisTransport


def cluster_of(urls: dict[str, str]) -> Cluster:
    """``{"ws-a": url, "ts-a": url}`` -> a Cluster; the role is the name's prefix."""
    return parse_cluster(
        {"nodes": [{"name": n, "role": n.split("-")[0], "redis": u} for n, u in urls.items()]},
        "test cluster",
    )


class TopicServerThread:
    def __init__(self, cluster: Cluster, names: Iterable[str] | None = None,
                 settings: LayerSettings | None = None) -> None:
        self.cluster = cluster
        self.names = list(names or (n.name for n in cluster.ts_nodes))
        self.settings = settings or LayerSettings(startup_sync_timeout=0.2)
        self.servers: dict[str, TopicServer] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self._runs: asyncio.Future | None = None

    def start(self) -> TopicServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._stop = asyncio.Event()
        runs = []
        for name in self.names:
            server = TopicServer(self.cluster, name, RedisTransport(self.cluster), self.settings)
            self.servers[name] = server
            runs.append(server.run(self._stop))
        self._runs = asyncio.gather(*runs)

    def stop(self) -> None:
        async def _stop() -> None:
            self._stop.set()
            await self._runs
            for server in self.servers.values():
                await server.transport.close()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> TopicServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
