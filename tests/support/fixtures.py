"""Pytest fixtures for real Redis servers.

Load them with ``pytest_plugins = ["tests.support.fixtures"]`` in ``tests/conftest.py``.

- ``redis_factory`` (session): call it to get a new running :class:`RedisProcess`; all are stopped
  when the session ends.
- ``redis_server`` (function): one fresh Redis for this test, stopped after it.
- ``redis_url`` (function): the URL of ``redis_server``.
- ``loop_clock`` (function, async tests): virtual time on the test's loop
  (:class:`tests.support.loop_clock.LoopClock`).

Nothing here uses the Redis on port 6379.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.loop_clock import LoopClock
from tests.support.redis import RedisFactory
from topics.devtools.embedded_redis import RedisProcess


@pytest.fixture(scope="session")
def redis_factory() -> Iterator[RedisFactory]:
    factory = RedisFactory()
    yield factory
    factory.stop_all()


@pytest.fixture
def redis_server(redis_factory: RedisFactory) -> Iterator[RedisProcess]:
    redis = redis_factory()
    yield redis
    redis.stop()  # now, not at session end: each test gets a clean, short-lived server


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    return redis_server.url


@pytest.fixture
async def loop_clock() -> AsyncIterator[LoopClock]:
    clock = LoopClock(asyncio.get_running_loop())
    yield clock
    clock.restore()
