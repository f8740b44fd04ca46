"""A WS node's snapshot for the admin: written to its own Redis every ``stats_interval``.

Topic servers publish their snapshot from their own loop; a WS node's layer starts only with
its first socket, and the admin must see a WS node (boot, version, heartbeat, connections)
before that. So a small daemon thread with its own short-timeout Redis client writes the
snapshot (schema and key: :mod:`channel_layer.stats`), reading the layer's counters and this
process's :mod:`topics.transport.ws_counters` without touching the server's loop.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import redis
from redis.exceptions import RedisError

from channel_layer import stats
from channel_layer.layer import DPSChannelLayer
from topics.transport import connections, ws_counters

logger = logging.getLogger(__name__)
PROCESS_STARTED = time.time()
PROCESS_BOOT = os.urandom(6).hex()


def copied(counter: Mapping[str, int] | None) -> dict[str, int]:
    """A copy of a counter another thread may be adding keys to."""
    for _ in range(5):
        try:
            return dict(counter or {})
        except RuntimeError:  # "dictionary changed size during iteration": try again
            continue
    return {}


def layer_counters(layer: DPSChannelLayer) -> dict[str, int]:
    """The layer's and its transport's counters, plus this process's own figures."""
    runtime = layer.runtime
    transport = runtime.transport
    merged = Counter(copied(runtime.counters))
    merged.update(copied(getattr(transport, "counters", None)))
    merged.update(ws_counters.COUNTS.as_dict())
    # The transports' own counters (imported here: they import this package's consumer).
    from topics.transport import consumer, longpoll

    merged["sends_after_close"] = sum(copied(consumer.SENDS_AFTER_CLOSE).values())
    merged.update({f"longpoll_{name}": n for name, n in copied(longpoll.STATS).items()})
    return dict(merged)


class NodeReporter:
    """Writes this WS node's snapshot now and then every ``interval`` seconds, until stopped."""

    def __init__(self, layer: DPSChannelLayer, url: str) -> None:
        self.layer = layer
        self.interval = layer.settings.stats_interval
        self.key = stats.snapshot_key(layer.settings.prefix, layer.node)
        self._client = redis.Redis.from_url(url, socket_connect_timeout=layer.settings.connect_timeout,
                                            socket_timeout=layer.settings.connect_timeout)
        self._rates = stats.RateWindow()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="dps-node-report", daemon=True)

    def start(self) -> NodeReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 1)

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        counters = layer_counters(self.layer)
        return {
            "role": "ws", "node": self.layer.node, "boot": PROCESS_BOOT,
            "started": PROCESS_STARTED, "updated": now, "version": stats.VERSION,
            "counters": counters,
            "rates": self._rates.add(now, {"publishes": counters.get("publishes", 0),
                                           "deliveries": counters.get("deliveries", 0)}),
            "connections": connections.open_sockets(),
            "identities": connections.open_sockets_by_identity(),
        }

    def report_once(self) -> None:
        try:
            self._client.set(self.key, stats.encode_snapshot(self.snapshot()),
                             ex=stats.snapshot_ttl(self.interval))
        except (RedisError, OSError) as exc:
            ws_counters.COUNTS.report_errors += 1
            if not self._failing:  # once per failing streak, not every interval
                logger.warning("cannot write the stats of %s: %s", self.layer.node,
                               type(exc).__name__)
            self._failing = True
        else:
            self._failing = False

    def _run(self) -> None:
        self.report_once()
        while not self._stop.wait(self.interval):
            self.report_once()


def start_for_this_process() -> NodeReporter | None:
    """Start the reporter if this process is a WS node of a Redis cluster (else None)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if not isinstance(layer, DPSChannelLayer) or layer.node is None or layer.cluster.embedded:
        return None
    node = layer.cluster.node(layer.node)
    if node.role != "ws" or node.redis_url is None:
        return None
    return NodeReporter(layer, node.redis_url).start()
