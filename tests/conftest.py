"""Shared fixtures, and each test's tier marker. Real Redis servers come from
tests.support.fixtures (never port 6379)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.inproc import TopicServerThread, cluster_of

pytest_plugins = ["tests.support.fixtures"]

TIERS = ("unit", "integration", "e2e")  # tests/<tier>/ holds that tier's tests, and only them
TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test with its directory's tier, so ``-m "not e2e"`` and ``-m unit`` select
    exactly ``tests/unit`` + ``tests/integration`` and ``tests/unit``. A test outside the
    three directories is a collection error: it would belong to no tier."""
    for item in items:
        tier = Path(str(item.path)).resolve().relative_to(TESTS_DIR).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/integration "
                                    "or tests/e2e")
        item.add_marker(tier)


@pytest.fixture(params=["memory", "redis", "redis-on-test-loop"])
def layer_factory(request, redis_factory):
    """Builds DPS layers on either the embedded (memory) cluster or a Redis cluster of one WS
    node and one TS node, each with its own real redis-server; ``redis-on-test-loop`` runs the
    runtime on the loop that first uses it (``runtime_loop="server"``, as under daphne or
    uvicorn) instead of on its own thread. Layers are closed after."""
    from channel_layer.layer import DPSChannelLayer

    made = []
    servers = []
    state = {}

    def make(**config):
        if request.param == "memory":
            layer = DPSChannelLayer(**config)
        else:
            if "cluster" not in state:
                state["cluster"] = cluster_of(
                    {"ws-a": redis_factory().url, "ts-a": redis_factory().url})
                servers.append(TopicServerThread(state["cluster"]).start())
            if request.param == "redis-on-test-loop":
                config.setdefault("runtime_loop", "server")
            layer = DPSChannelLayer(cluster=state["cluster"], node="ws-a", **config)
        made.append(layer)
        return layer

    make.backend = request.param
    yield make
    from asgiref.sync import async_to_sync

    for layer in made:
        home = layer.runtime.loop
        if home is not None and not home.is_running() and not home.is_closed():
            home.run_until_complete(layer.close())  # the test's own loop, not yet closed
        else:
            async_to_sync(layer.close)()
    for server in servers:
        server.stop()
