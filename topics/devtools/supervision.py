"""The supervision thread of a running local cluster: what exited is started again.

Once a cluster is up, every ``_POLL_INTERVAL`` this thread takes the node processes and
embedded Redis servers that exited and schedules each one's restart after the delay the
restart policy gives (``topics.devtools.supervisor``), saying its name and exit code. A node
the operator removed from the cluster file (a drained topic server exits 0) is let go.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from topics.devtools.embedded_redis import RedisStartError
from topics.devtools.node_redis import NodeRedis
from topics.devtools.process_group import ProcessGroup
from topics.devtools.supervisor import Backoff, RestartPolicy, describe_exit

_POLL_INTERVAL = 0.1


@dataclass
class _PendingRestart:
    """A supervised process that exited and waits out its backoff."""

    due: float
    restart: Callable[[], None]


class Supervision:
    """Restart the exited children of ``group`` (``respawn(name)``, unless ``listed(name)`` is
    False) and the exited servers of ``redis``, each after its backoff."""

    def __init__(self, group: ProcessGroup, redis: NodeRedis, policy: RestartPolicy, *,
                 respawn: Callable[[str], None], listed: Callable[[str], bool]) -> None:
        self._group = group
        self._redis = redis
        self._policy = policy
        self._respawn = respawn
        self._listed = listed
        self._backoffs: dict[str, Backoff] = {}
        self._pending: dict[str, _PendingRestart] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="dps-supervisor")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End supervision; no restart may race the shutdown that follows."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        self._pending.clear()

    def _run(self) -> None:
        while not self._stop.wait(_POLL_INTERVAL):
            try:
                self._round()
            except Exception as exc:  # supervision must outlive any one failed restart
                self._group.say(f"supervision error: {exc}")

    def _round(self) -> None:
        now = time.monotonic()
        for child in self._group.take_exited():
            code = child.proc.returncode
            if not self._listed(child.label):
                self._group.say(f"{child.label} exited with {describe_exit(code)} and is no "
                                "longer in the cluster file; not restarting it")
                continue
            self._schedule(child.label, code, now - child.started,
                           lambda name=child.label: self._respawn(name))
        for name, code, started_at in self._redis.exited():
            label = f"redis for {name}"
            if label not in self._pending:
                self._schedule(label, code, now - started_at,
                               lambda name=name: self._relaunch_redis(name))
        for label, pending in list(self._pending.items()):
            if pending.due <= time.monotonic() and not self._stop.is_set():
                del self._pending[label]
                pending.restart()

    def _schedule(self, label: str, code: int, ran_for: float,
                  restart: Callable[[], None]) -> None:
        backoff = self._backoffs.setdefault(label, Backoff(self._policy))
        delay = backoff.next_delay(ran_for)
        self._group.say(f"{label} exited with {describe_exit(code)} after {ran_for:.1f}s; "
                        f"restarting it in {delay:g}s (restart {backoff.restarts})")
        self._pending[label] = _PendingRestart(time.monotonic() + delay, restart)

    def _relaunch_redis(self, name: str) -> None:
        try:
            redis = self._redis.relaunch(name)
        except RedisStartError as exc:
            self._group.say(f"redis for {name} did not start again: {exc}")
            return  # still exited: the next round schedules another attempt
        self._group.say(f"redis for {name} restarted on {redis.url} (pid {redis.pid})")
