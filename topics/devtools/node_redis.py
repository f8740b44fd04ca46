"""One embedded Redis per node of a local cluster: started, watched, restarted, stopped.

Each node's Redis keeps its port for the cluster's life (a restart reuses it), so the cluster
file the nodes read stays true.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from topics.devtools.embedded_redis import RedisProcess, RedisServerNotFound, RedisStartError
from topics.devtools.process_group import ClusterError


class NodeRedis:
    """The embedded Redis servers of a cluster's nodes, by node name, under ``parent_dir``."""

    def __init__(self, parent_dir: str) -> None:
        self._parent_dir = parent_dir
        self._servers: dict[str, RedisProcess] = {}

    def start(self, names: Iterable[str], say: Callable[[str], None],
              check_stop: Callable[[], None]) -> dict[str, str]:
        """Start one Redis per name; return their URLs. Raises ClusterError if one fails."""
        for name in names:
            check_stop()
            redis = RedisProcess(parent_dir=self._parent_dir)
            self._servers[name] = redis  # registered first so stop() cleans up a failed start
            try:
                redis.start()
            except (RedisServerNotFound, RedisStartError) as exc:
                raise ClusterError(f"redis for {name}: {exc}") from exc
            say(f"redis for {name}: {redis.url} (pid {redis.pid})")
        return {name: redis.url for name, redis in self._servers.items()}

    def pid(self, name: str) -> int | None:
        redis = self._servers.get(name)
        return redis.pid if redis is not None else None

    def pids(self) -> list[int]:
        return [r.pid for r in self._servers.values() if r.pid is not None]

    def exited(self) -> Iterator[tuple[str, int, float]]:
        """(node name, exit code, monotonic start time) of every Redis that has exited."""
        for name, redis in self._servers.items():
            code = redis.returncode()
            if code is not None:
                yield name, code, redis.started_at

    def poll(self) -> str | None:
        """Describe the first Redis that has exited, or return None if all are running."""
        for name, code, _ in self.exited():
            return f"redis for {name} exited unexpectedly with exit code {code}"
        return None

    def relaunch(self, name: str) -> RedisProcess:
        """Start ``name``'s exited Redis again (same port and directory)."""
        redis = self._servers[name]
        redis.restart()
        return redis

    def replace(self, name: str) -> None:
        """Replace ``name``'s Redis by an empty one on the same port (its data is gone)."""
        old = self._servers[name]
        port = old.port
        old.stop()
        redis = self._servers[name] = RedisProcess(port, parent_dir=self._parent_dir)
        redis.start()

    def stop(self) -> None:
        for redis in self._servers.values():
            redis.stop()
        self._servers.clear()
