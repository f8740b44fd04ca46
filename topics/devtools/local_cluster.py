"""A whole DPS cluster on one machine, as child processes: what ``runcluster`` runs.

:class:`LocalCluster` turns a :class:`~topics.devtools.cluster_plan.ClusterPlan` (the pure part:
nodes, ports, Redis URLs, environments, commands) into processes. Its start: a private work
directory with the cluster's generated secret, one embedded Redis per node
(:mod:`topics.devtools.node_redis`, or one shared ``redis``), the cluster file, ``migrate``, the
node processes (:mod:`topics.devtools.process_group`), readiness; then supervision
(:mod:`topics.devtools.supervision`) or failure detection, and an orderly stop. What a node
*does* is the business of the project's ASGI app and the ``topic_server`` command. Tests and
benchmarks start the same cluster programmatically::

    with LocalCluster(ws=2, ts=2, port=free_port_block(2)) as cluster:
        connect(cluster.ws_urls[0])
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from channel_layer.cluster import WS, ClusterConfigError, parse_cluster, redact_url, ts_serving_line
from topics.devtools.cluster_files import RunningCluster, new_secret_key, write_private
from topics.devtools.cluster_plan import (
    CLUSTER_FILE_NAME,
    LISTEN_BACKLOG,
    REPOSITORY_DIR,
    SECRET_FILE_NAME,
    SERVERS,
    ClusterPlan,
    LocalNode,
    Project,
    node_suffix,
    plan_cluster,
)
from topics.devtools.embedded_redis import accepts_connections, free_port, port_is_free
from topics.devtools.node_redis import NodeRedis
from topics.devtools.process_group import (
    DEFAULT_STOP_TIMEOUT,
    ClusterError,
    ClusterInterrupted,
    ProcessGroup,
)
from topics.devtools.supervision import Supervision
from topics.devtools.supervisor import RestartPolicy

# What callers import from here, wherever it is defined.
__all__ = ["LISTEN_BACKLOG", "PROJECT_DIR", "SERVERS", "ClusterError", "ClusterInterrupted",
           "LocalCluster", "LocalNode", "node_suffix"]
PROJECT_DIR = REPOSITORY_DIR

DEFAULT_READY_TIMEOUT = 60.0
_POLL_INTERVAL = 0.1


class LocalCluster:
    """Start, watch and stop a local DPS cluster of ``ws`` WS nodes and ``ts`` TS nodes.

    WS nodes listen on ``host:port``, ``port+1``, ... Every node gets its own embedded Redis unless
    ``redis`` names one Redis URL for all of them. ``emit`` receives every output line. The
    nodes run ``project`` (default: this repository's site, with ``base_env``'s settings module).

    With ``supervise``, once the cluster is up a thread restarts any node or embedded Redis that
    exits (whatever its exit code) after a backoff, and logs its name and exit code; without it
    (``runcluster --fail-fast``, and what tests use to see a death) :meth:`wait` reports the
    first exit.

    24 methods besides ``__init__`` and the context-manager pair: the rest lives in its parts
    (the plan, the process group, the node Redis set, supervision).
    """

    def __init__(
        self,
        ws: int = 2,
        ts: int = 2,
        *,
        port: int = 8000,
        redis: str | None = None,
        host: str = "127.0.0.1",
        server: str = "daphne",
        migrate: bool = True,
        emit: Callable[[str], None] | None = None,
        base_env: Mapping[str, str] | None = None,
        supervise: bool = False,
        restart_policy: RestartPolicy | None = None,
        project: Project | None = None,
        standins: int = 0,
    ) -> None:
        if ts < 1:
            raise ValueError("a cluster needs at least one WS node and one TS node")
        self.plan: ClusterPlan = plan_cluster(
            ws, ts, port=port, host=host, server=server, redis=redis, project=project,
            base_env=os.environ if base_env is None else base_env, standins=standins,
            free_port=free_port)
        self.migrate = migrate
        self.supervise = supervise
        self._restart_policy = restart_policy or RestartPolicy()
        self._serving = ServingLines()
        self._group = ProcessGroup(self.plan.project.directory, emit or _print_line,
                                   on_line=self._serving.notice)
        self._workdir: Path | None = None
        self._redis: NodeRedis | None = None
        self._supervision: Supervision | None = None
        self._stop_requested = False

    # -- what the cluster is ---------------------------------------------------------------

    @property
    def nodes(self) -> tuple[LocalNode, ...]:
        return self.plan.nodes

    @property
    def ws_nodes(self) -> list[LocalNode]:
        return self.plan.ws_nodes

    @property
    def ws_urls(self) -> list[str]:
        return self.plan.ws_urls

    @property
    def workdir(self) -> str | None:
        """The private dir (0700) holding the cluster file, the secret and the Redis dirs;
        removed by :meth:`stop`."""
        return None if self._workdir is None else str(self._workdir)

    @property
    def cluster_file(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the cluster has not been started")
        return self._workdir / CLUSTER_FILE_NAME

    def files(self) -> RunningCluster:
        """The cluster file and the cluster's generated SECRET_KEY (both 0600), for the
        commands run beside it (``topics.devtools.cluster_files``)."""
        return RunningCluster(self.cluster_file, self.cluster_file.parent / SECRET_FILE_NAME)

    def command_for(self, node: LocalNode) -> list[str]:
        """The command line of a node process (the plan's; a test may run stand-ins)."""
        return self.plan.command_for(node)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = DEFAULT_READY_TIMEOUT) -> Self:
        """Start everything; return once every WS node accepts TCP connections and every topic
        server has said it serves its inbox.

        Raises :class:`ClusterError` (after stopping what was started) if a process dies, the
        cluster is not ready within ``timeout`` seconds, or a stop is requested meanwhile.
        """
        if self._workdir is not None:
            raise RuntimeError("the cluster is already started")
        try:
            _check_ports_free(self.plan)
            self._workdir = Path(tempfile.mkdtemp(prefix="dps-cluster-"))  # 0700
            write_private(self.files().secret_file, new_secret_key())
            self._start_redis()
            self._write_cluster_file()
            if self.migrate:
                self._run_migrate()
            for node in self.plan.spawned_nodes:
                self._spawn_node(node.name)
            self._wait_until_ready(self.plan.spawned_nodes, timeout)
            if self.supervise:
                self._supervision = Supervision(
                    self._group, self._redis, self._restart_policy,
                    respawn=self._spawn_node,
                    listed=lambda name: cluster_file_lists(self.cluster_file, name))
                self._supervision.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        self._redis = NodeRedis(str(self._workdir))
        if self.plan.shared_redis:
            self.say(f"every node uses Redis {redact_url(self.plan.shared_redis)}")
            return
        urls = self._redis.start([n.name for n in self.nodes], self.say, self._check_stop)
        self.plan = self.plan.with_redis(urls)

    def _write_cluster_file(self) -> None:
        config = self.plan.cluster_config()
        try:  # the nodes will read it: fail here, not in each node
            parse_cluster(config, "runcluster")
        except ClusterConfigError as exc:
            raise ClusterError(str(exc)) from exc
        # It holds Redis URLs, passwords included: readable by this user only, from creation.
        write_private(self.cluster_file, json.dumps(config, indent=2))
        self.say(f"cluster file: {self.cluster_file}")

    def _run_migrate(self) -> None:
        code = self._group.run("migrate", self.plan.migrate_command(),
                               self.plan.child_env(self._workdir), self._check_stop)
        if code:
            raise ClusterError(f"migrate failed with exit code {code}")

    def _spawn_node(self, name: str) -> None:
        node = self.plan.node(name)
        self._serving.discard(name)  # a restarted topic server is ready once it says so again
        child = self._group.spawn(name, self.command_for(node),
                                  self.plan.env_for(node, self._workdir))
        self.say(f"{name} started (pid {child.proc.pid})")

    def _wait_until_ready(self, nodes: list[LocalNode], timeout: float) -> None:
        # Ready = every WS node accepts connections and every topic server has said it serves:
        # a node that dies while starting fails the start instead of a later publish.
        waiting = list(nodes)
        deadline = time.monotonic() + timeout
        while True:
            self._check_stop()
            failure = self.poll()
            if failure:
                raise ClusterError(failure)
            waiting = [n for n in waiting if not (
                accepts_connections(n.port, self.plan.host) if n.role == WS
                else self._serving.said(n.name))]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"not ready after {timeout:g}s: " + ", ".join(
                    f"{n.name} not accepting connections" if n.role == WS else
                    f"{n.name} not serving" for n in waiting))
            time.sleep(_POLL_INTERVAL)

    def pid_of(self, name: str) -> int | None:
        """The pid of the node process called ``name`` now (None while it is down)."""
        return self._group.pids().get(name)

    def redis_pid(self, name: str) -> int | None:
        """The pid of the embedded Redis of node ``name`` (None with a shared ``--redis``)."""
        return self._redis.pid(name) if self._redis is not None else None

    # -- one node at a time (failure tests) -------------------------------------------------

    def kill_node(self, name: str, signum: int = signal.SIGKILL,
                  timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop one node's process with ``signum`` and forget it (``poll`` no longer sees it)."""
        self._group.kill(name, signum, timeout)
        self._serving.discard(name)

    def start_node(self, name: str, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Start one node (again) and wait until it is ready."""
        self._spawn_node(name)
        self._wait_until_ready([self.plan.node(name)], timeout)

    def restart_redis(self, name: str) -> None:
        """Replace ``name``'s Redis by an empty one on the same port (its data is gone)."""
        self._redis.replace(name)

    def poll(self) -> str | None:
        """Describe the first process that has exited, or return None if all are running."""
        return self._group.poll() or (self._redis.poll() if self._redis is not None else None)

    def request_stop(self) -> None:
        """Ask :meth:`start` or :meth:`wait` to return; safe to call from a signal handler."""
        # A plain flag, not an Event: Event.set() takes a lock and can deadlock in a handler.
        self._stop_requested = True

    def _check_stop(self) -> None:
        if self._stop_requested:
            raise ClusterInterrupted("stop requested while the cluster was starting")

    def wait(self) -> str | None:
        """Block until a stop is requested (return None) or, unsupervised, a process dies
        (return why)."""
        while not self._stop_requested:
            failure = None if self.supervise else self.poll()
            if failure:
                return failure
            time.sleep(_POLL_INTERVAL)
        return None

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``timeout``), then Redis; remove the work
        dir. Idempotent."""
        if self._supervision is not None:
            self._supervision.stop()  # no restart may race the shutdown
            self._supervision = None
        self._group.stop(timeout)
        if self._redis is not None:  # Redis goes last: nodes shutting down may still use it
            self._redis.stop()
            self._redis = None
        self._serving.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def say(self, message: str) -> None:
        """Emit one line of the cluster's own (not a node's) output."""
        self._group.say(message)


class ServingLines:
    """The topic servers that have said they serve their inbox (their readiness line)."""

    def __init__(self) -> None:
        self._names: set[str] = set()

    def notice(self, label: str, line: str) -> None:
        if line.startswith(ts_serving_line(label)):
            self._names.add(label)

    def said(self, name: str) -> bool:
        return name in self._names

    def discard(self, name: str) -> None:
        self._names.discard(name)

    def clear(self) -> None:
        self._names.clear()


def cluster_file_lists(cluster_file: Path, name: str) -> bool:
    """Whether ``cluster_file`` still lists node ``name`` (the operator may have removed it)."""
    try:
        config = json.loads(cluster_file.read_text())
        return any(node.get("name") == name for node in config["nodes"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return True  # unreadable mid-edit: restart, the node itself will judge the file


def _check_ports_free(plan: ClusterPlan) -> None:
    # A port held by someone else would also "accept connections": readiness would lie.
    for node in plan.ws_nodes:
        if node.spawned and not port_is_free(node.port, plan.host, allow_time_wait=True):
            raise ClusterError(f"port {node.port} on {plan.host} (for {node.name}) is in use")


def _print_line(line: str) -> None:
    print(line, flush=True)
