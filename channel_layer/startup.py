"""Checks a node makes before it serves: every node's Redis answers."""
from __future__ import annotations

import redis
from redis.exceptions import RedisError

from channel_layer.cluster import Cluster, ClusterConfigError


def check_reachable(cluster: Cluster, timeout: float = 2.0) -> None:
    """Raise :class:`ClusterConfigError` naming the first node whose Redis does not answer.

    The message shows the URL with its password redacted.
    """
    checked: set[str] = set()
    for node in cluster.nodes:
        if node.redis_url is None or node.redis_url in checked:
            continue
        checked.add(node.redis_url)
        client = redis.Redis.from_url(node.redis_url, socket_connect_timeout=timeout,
                                      socket_timeout=timeout)
        try:
            client.ping()
        except (RedisError, OSError) as exc:
            raise ClusterConfigError(
                f"cannot reach the Redis of node {node.name} at {node.redacted_url}: {exc}"
            ) from None
        finally:
            client.close()


def check_ws_node() -> None:
    """Fail a WS process at start (not at its first message) when its cluster is unusable.

    Runs the same validation the layer does (unknown node, duplicate names, malformed URLs)
    and pings every node's Redis. Only for the DPS layer; a no-op for the embedded cluster.
    """
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from channel_layer.cluster import WS, current_node_name, load_cluster

    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    if not backend.startswith("channel_layer"):
        return
    try:
        cluster = load_cluster(getattr(settings, "DPS_CLUSTER", None))
        node = current_node_name(cluster, getattr(settings, "DPS_NODE", None))
        if cluster.embedded:
            return
        if node is not None and cluster.node(node).role != WS:
            raise ClusterConfigError(f"node {node!r} has role 'ts': run it with "
                                     "`manage.py topic_server`, not as a WebSocket server")
        check_reachable(cluster)
    except ClusterConfigError as exc:
        raise ImproperlyConfigured(f"DPS cannot start: {exc}") from None
