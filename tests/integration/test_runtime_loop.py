"""Where a node's runtime runs (``runtime_loop``): on the server's loop or on its own thread.

The layer contract suite also runs with the runtime on the test's loop (``layer_factory``'s
``redis-on-test-loop``); e2e tests check that daphne and uvicorn WS nodes pick the server's loop.
"""
from __future__ import annotations

import asyncio
import sys
import threading
import types

import pytest
from asgiref.sync import async_to_sync

from channel_layer import loop_home as runtime_module
from channel_layer.layer import DPSChannelLayer
from channel_layer.settings import LayerSettings
from channel_layer.transport import TransportError
from tests.support.inproc import TopicServerThread, cluster_of
from topics.devtools.embedded_redis import RedisProcess


def runtime_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("dps-runtime")]


@pytest.mark.parametrize(("argv0", "main_spec", "expected"), [
    ("/venv/bin/daphne", None, True),                        # the daphne console script
    ("/venv/lib/uvicorn/__main__.py", "uvicorn.__main__", True),  # python -m uvicorn
    ("/venv/bin/hypercorn", None, True),
    ("/venv/bin/pytest", None, False),
    ("manage.py", None, False),                              # runserver, management commands
    ("-c", None, False),
])
def test_auto_means_the_server_loop_only_in_asgi_server_programs(
        monkeypatch: pytest.MonkeyPatch, argv0: str, main_spec: str | None, expected: bool) -> None:
    main = types.ModuleType("__main__")
    main.__spec__ = None if main_spec is None else types.SimpleNamespace(name=main_spec)
    monkeypatch.setattr(sys, "argv", [argv0])
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert runtime_module.started_as_asgi_server() is expected
    assert runtime_module.uses_server_loop("auto") is expected
    assert runtime_module.uses_server_loop("server") is True
    assert runtime_module.uses_server_loop("thread") is False


def test_an_unknown_runtime_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="runtime_loop must be one of auto, server, thread"):
        LayerSettings.from_config({"runtime_loop": "fibers"})


@pytest.fixture
def redis_cluster(redis_factory):
    cluster = cluster_of({"ws-a": redis_factory().url, "ts-a": redis_factory().url})
    server = TopicServerThread(cluster).start()
    yield cluster
    server.stop()


async def test_on_the_server_loop_the_runtime_shares_the_callers_loop(redis_cluster) -> None:
    before = runtime_threads()
    layer = DPSChannelLayer(cluster=redis_cluster, node="ws-a", runtime_loop="server")
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "hello", "n": 1})
        assert (await asyncio.wait_for(layer.receive(channel), 5)) == {"type": "hello", "n": 1}
        assert layer.runtime.loop is asyncio.get_running_loop()
        assert layer.runtime.on_server_loop and runtime_threads() == before
        # A caller on another thread's loop still reaches it (one hop onto this loop).
        await asyncio.to_thread(async_to_sync(layer.group_send), "room", {"type": "from-thread"})
        assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "from-thread"
    finally:
        await layer.close()
    assert layer.runtime.loop is None


def test_started_outside_the_main_thread_it_falls_back_to_a_thread(redis_cluster) -> None:
    # async_to_sync runs the call on a loop in a worker thread, which dies afterwards: the
    # runtime must not live there.
    layer = DPSChannelLayer(cluster=redis_cluster, node="ws-a", runtime_loop="server")
    try:
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)("room", channel)
        async_to_sync(layer.group_send)("room", {"type": "grouped"})
        assert async_to_sync(layer.receive)(channel)["type"] == "grouped"
        assert not layer.runtime.on_server_loop
        assert "dps-runtime-ws-a" in runtime_threads()
    finally:
        async_to_sync(layer.close)()


async def test_a_failed_start_is_reported_to_the_caller_and_retried(redis_factory) -> None:
    dead = redis_factory()
    port = dead.port
    cluster = cluster_of({"ws-a": dead.url, "ts-a": dead.url})
    dead.stop()
    layer = DPSChannelLayer(cluster=cluster, node="ws-a", runtime_loop="server",
                            connect_timeout=0.5)
    revived = owner = None
    try:
        channel = await layer.new_channel()
        with pytest.raises(TransportError, match="Redis of node ws-a"):
            await asyncio.wait_for(layer.group_add("room", channel), 10)
        assert layer.runtime.loop is None
        # The next call boots again instead of reusing the failure: with Redis (and the
        # group's owner, which confirms every join) back, it works.
        revived = RedisProcess(port=port).start()
        owner = TopicServerThread(cluster).start()
        await asyncio.wait_for(layer.group_add("room", channel), 10)
        assert layer.runtime.loop is asyncio.get_running_loop()
    finally:
        await layer.close()
        if owner is not None:
            owner.stop()
        if revived is not None:
            revived.stop()
