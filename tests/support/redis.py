"""Throwaway Redis servers for tests, found and started the way ``runcluster`` does it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from topics.devtools.embedded_redis import RedisProcess, find_redis_server


class RedisFactory:
    """Start :class:`RedisProcess` instances on free ports; :meth:`stop_all` ends every one."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()  # looked up once, not per server
        self._started: list[RedisProcess] = []

    def __call__(self, *extra_args: str) -> RedisProcess:
        """A new, running Redis; ``extra_args`` go to redis-server (``"--maxclients", "5"``)."""
        redis = RedisProcess(binary=self.binary, extra_args=extra_args)
        self._started.append(redis)
        return redis.start()

    def stop_all(self) -> None:
        # At once: a Redis takes up to a tick of its cron (100 ms) to act on SIGTERM, and a
        # session leaves a few hundred of them.
        started, self._started = self._started, []
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(RedisProcess.stop, started))
