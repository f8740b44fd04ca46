"""What end-to-end tests read from and send into a running cluster by its Redis: a topic
server's published stats, a node's inbox backlog, and group sends through a layer of its own."""
from __future__ import annotations

import json

import redis

from channel_layer.cluster import load_cluster
from channel_layer.layer import DPSChannelLayer


def ts_stats(url: str, node: str = "ts-a") -> dict | None:
    client = redis.Redis.from_url(url)
    try:
        blob = client.get(f"dps:stats:{node}")
    finally:
        client.close()
    return json.loads(blob) if blob else None


def xlen(url: str, node: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return client.xlen(f"dps:inbox:{node}")
    finally:
        client.close()


async def publish(cluster_file, group: str, count: int, start: int = 0, padding: str = "",
                  **config) -> None:
    layer = DPSChannelLayer(cluster=load_cluster(env={"DPS_CLUSTER": str(cluster_file)}), **config)
    try:
        for i in range(start, start + count):
            message = {"type": "test.message", "group": group, "publisher": "client", "seq": i}
            if padding:
                message["padding"] = padding
            await layer.group_send(group, message)
    finally:
        await layer.close()
