"""The server side of one benchmark run: a fresh cluster of one back end, started and stopped.

- ``dps``: :class:`topics.devtools.local_cluster.LocalCluster` (WS and TS nodes, one Redis per node).
- ``redis`` / ``redis_pubsub``: ONE embedded Redis and WS nodes (daphne or uvicorn) with
  ``DPS_BENCH_BACKEND`` and ``DPS_BENCH_REDIS_URL`` set, so the same consumer runs over
  channels_redis' ``RedisChannelLayer`` / ``RedisPubSubChannelLayer``.
- ``local``: ONE WS node over :class:`topics.devtools.local_broadcast.LocalBroadcastLayer`.

For ``node_scale`` a cluster may also hold *stand-in* WS nodes: layer instances (one per node,
all in one ``topics.devtools.benchmark.standin`` process) that hold a channel in no group, so the cluster
is N WS nodes big for the layer while only 2 real servers hold members.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from topics.devtools.embedded_redis import RedisProcess, accepts_connections, free_port_block
from topics.devtools.local_cluster import (
    DAPHNE_PING_ARGS,
    PROJECT_DIR,
    UVICORN_PING_ARGS,
    LocalCluster,
    node_suffix,
)

BACKENDS = ("dps", "redis", "redis_pubsub", "local")
_READY_TIMEOUT = 60.0
REDIS_POOL_QUERY = "?max_connections=10000"


class BenchServerError(RuntimeError):
    """A server process of the benchmark did not start or died."""


def _base_env(workdir: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DPS_NODE", "DPS_CLUSTER", "DPS_BENCH_BACKEND", "DPS_BENCH_REDIS_URL"):
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
    env["DPS_PUBLISH_RATE"] = "100000"
    env["DPS_PUBLISH_BURST"] = "100000"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ws_command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", "--no-access-log", *UVICORN_PING_ARGS,
                "dps_site.asgi:application"]
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
            *DAPHNE_PING_ARGS, "dps_site.asgi:application"]


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
        self.ws_ports: list[int] = []
        self.redis_urls: list[str] = []
        self.redis_pids: list[int] = []
        self._workdir = tempfile.mkdtemp(prefix="dps-bench-")
        self._cluster: LocalCluster | None = None
        self._redis: list[RedisProcess] = []
        self._procs: list[subprocess.Popen] = []
        self._standin: subprocess.Popen | None = None

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{p}/socket/websocket?vsn=2.0.0" for p in self.ws_ports]

    def _emit(self, line: str) -> None:
        if self.log is not None:
            self.log.write(line + "\n")
            self.log.flush()

    # ------------------------------------------------------------------------ start/stop
    def start(self) -> BenchServers:
        try:
            if self.backend == "dps" and not self.standins:
                self._start_local_cluster()
            elif self.backend == "dps":
                self._start_dps_with_standins()
            else:
                self._start_plain()
            if self.standins:
                self._start_standins()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_local_cluster(self) -> None:
        port = free_port_block(self.ws)
        self._cluster = LocalCluster(ws=self.ws, ts=2, port=port, server=self.server,
                                     migrate=False, emit=self._emit,
                                     base_env=_base_env(self._workdir))
        self._cluster.start()
        self.ws_ports = [port + i for i in range(self.ws)]
        self.redis_urls = sorted({self._cluster.redis_url(n) for n in self._cluster.nodes})
        self.redis_pids = [r.pid for r in self._cluster._redis.values()]  # noqa: SLF001

    def _new_redis(self) -> RedisProcess:
        redis = RedisProcess(parent_dir=self._workdir)
        self._redis.append(redis)
        redis.start()
        self.redis_urls.append(redis.url)
        self.redis_pids.append(redis.pid)
        return redis

    def _spawn(self, label: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(Path(self._workdir, f"{label}.log"), "w")  # noqa: SIM115 - closed with the dir
        proc = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        return proc

    def _wait_ports(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        waiting = list(self.ws_ports)
        while waiting:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise BenchServerError(f"a server exited with {proc.returncode}: "
                                           f"{self._log_tails()}")
            if time.monotonic() > deadline:
                raise BenchServerError(f"WS ports {waiting} not ready: {self._log_tails()}")
            waiting = [p for p in waiting if not accepts_connections(p)]
            if waiting:
                time.sleep(0.1)

    def _log_tails(self) -> str:
        tails = []
        for path in sorted(Path(self._workdir).glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-10:]
            tails.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(tails)

    def _start_plain(self) -> None:
        env = _base_env(self._workdir)
        env["DPS_BENCH_BACKEND"] = self.backend
        if self.backend != "local":
            # redis-py 8's asyncio pool allows 100 connections by default, and channels_redis
            # takes one per concurrent command: raise it so that the load, not the pool, limits.
            env["DPS_BENCH_REDIS_URL"] = self._new_redis().url + REDIS_POOL_QUERY
        port = free_port_block(self.ws)
        self.ws_ports = [port + i for i in range(self.ws)]
        for i, p in enumerate(self.ws_ports):
            self._spawn(f"ws-{node_suffix(i)}", _ws_command(self.server, p), env)
        self._wait_ports()

    def _dps_cluster_file(self) -> Path:
        nodes = []
        for i in range(self.ws + self.standins):
            nodes.append({"name": f"ws-{node_suffix(i)}", "role": "ws",
                          "redis": self._new_redis().url})
        for i in range(2):
            nodes.append({"name": f"ts-{node_suffix(i)}", "role": "ts",
                          "redis": self._new_redis().url})
        path = Path(self._workdir, "cluster.json")
        path.write_text(json.dumps({"nodes": nodes}))
        return path

    def _start_dps_with_standins(self) -> None:
        """Like LocalCluster, but the cluster file also lists the stand-in WS nodes."""
        cluster_file = self._dps_cluster_file()
        env = {**_base_env(self._workdir), "DPS_CLUSTER": str(cluster_file)}
        for i in range(2):
            self._spawn(f"ts-{node_suffix(i)}", [sys.executable, "manage.py", "topic_server"],
                        {**env, "DPS_NODE": f"ts-{node_suffix(i)}"})
        port = free_port_block(self.ws)
        self.ws_ports = [port + i for i in range(self.ws)]
        for i, p in enumerate(self.ws_ports):
            self._spawn(f"ws-{node_suffix(i)}", _ws_command(self.server, p),
                        {**env, "DPS_NODE": f"ws-{node_suffix(i)}"})
        self._wait_ports()

    def _start_standins(self) -> None:
        env = _base_env(self._workdir)
        if self.backend == "dps":
            env["DPS_CLUSTER"] = str(Path(self._workdir, "cluster.json"))
        else:
            env["DPS_BENCH_REDIS_URL"] = self.redis_urls[0] + REDIS_POOL_QUERY
        names = [f"ws-{node_suffix(self.ws + i)}" for i in range(self.standins)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "topics.devtools.benchmark.standin", self.backend, ",".join(names)],
            cwd=PROJECT_DIR, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._standin = proc
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            rest = proc.stdout.read() if proc.poll() is not None else ""
            raise BenchServerError(f"stand-ins did not start: {line}{rest}")

    def server_pids(self) -> dict[str, list[int]]:
        """Every server process by role: ws, ts, redis, standin (pids of the process leaders)."""
        pids: dict[str, list[int]] = {"ws": [], "ts": [], "redis": list(self.redis_pids),
                                      "standin": []}
        if self._cluster is not None:
            for child in self._cluster._children:  # noqa: SLF001 - LocalCluster keeps them here
                role = "ts" if child.label.startswith("ts-") else "ws"
                pids[role].append(child.proc.pid)
        for proc in self._procs:
            cmd = " ".join(proc.args)
            pids["ts" if "topic_server" in cmd else "ws"].append(proc.pid)
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
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            _stop_proc(proc)
        self._procs.clear()
        for redis in self._redis:
            redis.stop()
        self._redis.clear()
        if self._workdir:
            import shutil

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
