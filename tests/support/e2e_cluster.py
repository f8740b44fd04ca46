"""A local cluster for end-to-end tests: LocalCluster's WS and TS nodes, ready once a join and
a publish round-trip on every WS node for topics of every TS node; and topics no other test uses.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from channel_layer.ring import Ring
from tests.support.phoenix_client import PhoenixClient, socket_url
from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import ClusterError, LocalCluster

TS_NODES = ["ts-a", "ts-b"]
RING = Ring(TS_NODES)
MAX_FRAME_BYTES = 1024 * 1024  # DPS_MAX_FRAME_BYTES of the clusters here (the default)
READY_TIMEOUT = 60.0


@dataclass
class E2ECluster:
    cluster: LocalCluster
    ports: list[int]
    log: list[str] = field(default_factory=list)

    def url(self, node: int, vsn: str = "2.0.0") -> str:
        return socket_url(self.ports[node], vsn)

    async def client(self, node: int, vsn: str = "2.0.0") -> PhoenixClient:
        return await PhoenixClient.connect(self.url(node, vsn))

    def check_running(self) -> None:
        failure = self.cluster.poll()
        assert failure is None, f"{failure}\n" + "\n".join(self.log[-40:])


_names = itertools.count()


def fresh_topic(owner: str | None = None) -> str:
    """A topic no other test uses; owned by ``owner`` (a TS node name) when given."""
    while True:
        topic = f"topics:e2e{uuid.uuid4().hex[:10]}n{next(_names)}"
        if owner is None or RING.owner_of(group_of(topic)) == owner:
            return topic


def group_of(topic: str) -> str:
    return topic.replace(":", ".", 1)


async def wait_until_routable(e2e: E2ECluster) -> None:
    """Until a join + publish round-trips on each WS node for topics owned by each TS node."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    for node in range(len(e2e.ports)):
        for owner in TS_NODES:
            while True:
                try:
                    async with await e2e.client(node) as client:
                        topic = fresh_topic(owner)
                        await client.join_ok(topic, timeout=5)
                        await client.publish(topic, "ready", {}, timeout=5)
                        await client.pushes(topic, 1, timeout=5)
                    break
                except (OSError, TimeoutError, AssertionError):
                    e2e.check_running()
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.2)  # a bounded poll: retry until the deadline


def run_cluster(tmp_path_factory: pytest.TempPathFactory, server: str = "daphne", ws: int = 2,
                 ts: int = 2, **env: str) -> Iterator[E2ECluster]:
    log: list[str] = []
    port = free_port_block(ws)
    base_env = {
        **os.environ,
        "DPS_DATABASE": str(tmp_path_factory.mktemp("e2e") / "db.sqlite3"),
        # The socket limits these tests rely on, whatever the caller's environment says.
        "DPS_MAX_FRAME_BYTES": str(MAX_FRAME_BYTES),
        "DPS_IDLE_TIMEOUT": "60",
        "DPS_MAX_TOPICS_PER_SOCKET": "100",
        **env,
    }
    cluster = LocalCluster(ws=ws, ts=ts, port=port, server=server, emit=log.append,
                           base_env=base_env)
    e2e = E2ECluster(cluster, [port + i for i in range(ws)], log)
    try:
        try:
            cluster.start()
            asyncio.run(wait_until_routable(e2e))
        except (ClusterError, OSError, TimeoutError) as exc:
            pytest.fail(f"the {server} cluster did not start: {exc}\n" + "\n".join(log[-60:]))
        yield e2e
    finally:
        cluster.stop()
