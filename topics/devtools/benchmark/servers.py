"""The server side of one benchmark run: a fresh cluster of one back end, started and stopped.

- ``dps``: :class:`topics.devtools.local_cluster.LocalCluster` (WS and TS nodes, one Redis per
  node).
- ``redis`` / ``redis_pubsub``: ONE embedded Redis and WS nodes (daphne or uvicorn) run with
  that baseline's settings module (``topics.devtools.benchmark.settings_<backend>``), so the
  same consumer runs over channels_redis' ``RedisChannelLayer`` / ``RedisPubSubChannelLayer``.
- ``local``: ONE WS node over :class:`topics.devtools.local_broadcast.LocalBroadcastLayer`.
- ``plain_redis`` / ``plain_redis_pubsub``: as ``redis`` / ``redis_pubsub``, but the WS nodes
  serve the plain Channels consumer (``plain_consumer``, ``plain_asgi``), not DPS's.

Every limit that would cap the offered load rather than measure it is raised for every back end
that has it (:func:`raised_limits` says which, and the benchmark prints it).

The WS nodes of every back end run the command lines of :mod:`topics.devtools.cluster_plan`, in
a :class:`topics.devtools.process_group.ProcessGroup`.

For ``node_scale`` a cluster may also hold *stand-in* WS nodes: layer instances (one per node,
all in one ``topics.devtools.benchmark.standin`` process) that hold a channel in no group, so
the cluster is N WS nodes big for the layer while only 2 real servers hold members.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO

from topics.devtools.benchmark.baseline_settings import CHANNEL_CAPACITY, REDIS_URL_ENV
from topics.devtools.cluster_plan import REPOSITORY_DIR, Project, node_suffix, plan_cluster
from topics.devtools.embedded_redis import (
    RedisProcess,
    accepts_connections,
    free_port,
    free_port_block,
)
from topics.devtools.local_cluster import LocalCluster
from topics.devtools.process_group import ProcessGroup

# The back ends every scenario runs by default; the plain-consumer ones on request (capacity).
DEFAULT_BACKENDS = ("dps", "redis", "redis_pubsub", "local")
PLAIN_BACKENDS = ("plain_redis_pubsub", "plain_redis")
BACKENDS = DEFAULT_BACKENDS + PLAIN_BACKENDS
PLAIN_ASGI_APP = "topics.devtools.benchmark.plain_asgi:application"
PUBLISH_RATE = 100_000  # per socket (DPS_PUBLISH_RATE, default 100/s), and its burst
_READY_TIMEOUT = 60.0
REDIS_POOL_QUERY = "?max_connections=10000"
_FAILURE_LINES = 20  # the servers' last lines quoted when one of them does not start


class BenchServerError(RuntimeError):
    """A server process of the benchmark did not start or died."""


def baseline_settings(backend: str) -> str:
    """The settings module the WS nodes of a baseline back end run with."""
    return f"topics.devtools.benchmark.settings_{backend}"


def _base_env(workdir: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DPS_NODE", "DPS_CLUSTER", REDIS_URL_ENV):
        env.pop(name, None)
    env["DJANGO_SETTINGS_MODULE"] = "dps_site.settings"
    env["DPS_DATABASE"] = str(Path(workdir, "bench.sqlite3"))  # never the developer's db
    env["DPS_LOG_LEVEL"] = "WARNING"
    env["DJANGO_DEBUG"] = "0"
    # A production-style node: its own key, local hosts, anonymous load generators, and a
    # publish rate limit well above what a benchmark publisher sends.
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(40)
    env["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    env["DPS_ALLOW_ANONYMOUS"] = "1"
    env["DPS_PUBLISH_RATE"] = str(PUBLISH_RATE)
    env["DPS_PUBLISH_BURST"] = str(PUBLISH_RATE)
    env["DPS_LAYER"] = json.dumps({"capacity": CHANNEL_CAPACITY})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def raised_limits(backend: str) -> dict[str, str]:
    """The limits this benchmark raises for ``backend``'s servers, with their defaults: what
    would otherwise cap the offered load (and count as loss) before the servers do."""
    limits: dict[str, str] = {}
    if backend not in PLAIN_BACKENDS:  # DPS's consumer
        limits["DPS_PUBLISH_RATE"] = f"{PUBLISH_RATE}/s per socket (default 100)"
        limits["DPS_PUBLISH_BURST"] = f"{PUBLISH_RATE} (default 1000)"
    else:
        limits["publish limit"] = "none (the plain consumer has none)"
    if backend in ("dps", "redis", "plain_redis"):
        limits["channel capacity"] = f"{CHANNEL_CAPACITY} messages (default 100)"
    if backend in ("redis", "redis_pubsub", *PLAIN_BACKENDS):
        limits["redis-py pool"] = (f"{REDIS_POOL_QUERY.rpartition('=')[2]} connections "
                                   "(default 100)")
    return limits


class BenchServers:
    """One back end's cluster. ``ws_urls``: the real WS nodes; ``redis_urls``: every Redis."""

    def __init__(self, backend: str, *, server: str = "daphne", ws: int = 2, standins: int = 0,
                 log: IO[str] | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown back end {backend!r}; choose from {', '.join(BACKENDS)}")
        self.backend = backend
        self.server = server
        self.ws = 1 if backend == "local" else ws
        self.standins = standins
        self.log = log
        self.ws_urls: list[str] = []
        self.redis_urls: list[str] = []
        self._workdir = tempfile.mkdtemp(prefix="dps-bench-")
        self._last_lines: deque[str] = deque(maxlen=_FAILURE_LINES)
        self._cluster: LocalCluster | None = None
        self._group: ProcessGroup | None = None
        self._redis: RedisProcess | None = None
        self._standin: subprocess.Popen | None = None

    def _emit(self, line: str) -> None:
        self._last_lines.append(line)
        if self.log is not None:
            self.log.write(line + "\n")
            self.log.flush()

    # ------------------------------------------------------------------------ start/stop
    def start(self) -> BenchServers:
        try:
            if self.backend == "dps":
                self._start_dps()
            else:
                self._start_baseline()
            if self.standins:
                self._start_standins()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_dps(self) -> None:
        # Stand-in WS nodes are listed in the cluster file (each with its own Redis) but run
        # in the stand-in process, not as servers.
        self._cluster = LocalCluster(ws=self.ws, ts=2, port=free_port_block(self.ws),
                                     server=self.server, migrate=False, emit=self._emit,
                                     base_env=_base_env(self._workdir), standins=self.standins)
        self._cluster.start()
        plan = self._cluster.plan
        self.ws_urls = plan.ws_urls
        self.redis_urls = sorted({plan.redis_url(n) for n in plan.nodes})

    def _start_baseline(self) -> None:
        env = {**_base_env(self._workdir),
               "DJANGO_SETTINGS_MODULE": baseline_settings(self.backend)}
        if self.backend != "local":
            self._redis = RedisProcess(parent_dir=self._workdir).start()
            self.redis_urls = [self._redis.url]
            # redis-py 8's asyncio pool allows 100 connections by default, and channels_redis
            # takes one per concurrent command: raise it so that the load, not the pool, limits.
            env[REDIS_URL_ENV] = self._redis.url + REDIS_POOL_QUERY
        project = Project.repository_site(env["DJANGO_SETTINGS_MODULE"])
        if self.backend in PLAIN_BACKENDS:
            project = Project(REPOSITORY_DIR, env["DJANGO_SETTINGS_MODULE"], PLAIN_ASGI_APP)
        plan = plan_cluster(self.ws, 0, port=free_port_block(self.ws), server=self.server,
                            project=project,
                            base_env=env, free_port=free_port, quiet_servers=True)
        self._group = ProcessGroup(REPOSITORY_DIR, self._emit, name="benchmark")
        for node in plan.ws_nodes:
            self._group.spawn(node.name, plan.command_for(node), env)
        self.ws_urls = plan.ws_urls
        self._wait_ports([n.port for n in plan.ws_nodes])

    def _wait_ports(self, ports: list[int]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while ports:
            failure = self._group.poll()
            if failure:
                raise BenchServerError(f"{failure}: {self._tail()}")
            if time.monotonic() > deadline:
                raise BenchServerError(f"WS ports {ports} not ready: {self._tail()}")
            ports = [p for p in ports if not accepts_connections(p)]
            if ports:
                time.sleep(0.1)

    def _tail(self) -> str:
        return "\n" + "\n".join(self._last_lines)

    def _start_standins(self) -> None:
        env = _base_env(self._workdir)
        if self._cluster is not None:
            env["DPS_CLUSTER"] = str(self._cluster.cluster_file)
            names = [n.name for n in self._cluster.plan.nodes if not n.spawned]
        else:
            env["DJANGO_SETTINGS_MODULE"] = baseline_settings(self.backend)
            env[REDIS_URL_ENV] = self.redis_urls[0] + REDIS_POOL_QUERY
            names = [f"ws-{node_suffix(self.ws + i)}" for i in range(self.standins)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "topics.devtools.benchmark.standin", self.backend,
             ",".join(names)], cwd=REPOSITORY_DIR, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._standin = proc
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            rest = proc.stdout.read() if proc.poll() is not None else ""
            raise BenchServerError(f"stand-ins did not start: {line}{rest}")

    def server_pids(self) -> dict[str, list[int]]:
        """Every server process by role: ws, ts, redis, standin (pids of the process leaders)."""
        pids: dict[str, list[int]] = {"ws": [], "ts": [], "redis": [], "standin": []}
        if self._cluster is not None:
            for node in self._cluster.nodes:
                pid, redis_pid = self._cluster.pid_of(node.name), self._cluster.redis_pid(node.name)
                if pid is not None:
                    pids[node.role].append(pid)
                if redis_pid is not None:
                    pids["redis"].append(redis_pid)
        if self._group is not None:
            pids["ws"] += self._group.pids().values()
        if self._redis is not None and self._redis.pid is not None:
            pids["redis"].append(self._redis.pid)
        if self._standin is not None:
            pids["standin"].append(self._standin.pid)
        return pids

    def stop(self) -> None:
        if self._standin is not None:
            _stop_proc(self._standin)
            self._standin = None
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None
        if self._group is not None:
            self._group.stop()
            self._group = None
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = ""

    def __enter__(self) -> BenchServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_proc(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_servers(backend: str, server: str, standins: int = 0,
                  log: IO[str] | None = None, emit: Callable[[str], None] | None = None
                  ) -> BenchServers:
    if emit:
        emit(f"starting a fresh {backend} cluster"
             + (f" (+{standins} stand-in WS nodes)" if standins else ""))
    return BenchServers(backend, server=server, standins=standins, log=log).start()
