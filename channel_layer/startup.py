"""Checks a node makes before it serves: every node's Redis answers."""
from __future__ import annotations

import redis
from redis.exceptions import RedisError

from .cluster import Cluster, ClusterConfigError


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
