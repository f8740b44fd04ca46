"""What a local DPS cluster is, before anything runs: a pure, frozen plan.

A :class:`ClusterPlan` names the nodes (``ws-a``, ``ts-a`` ...), their ports, their Redis URLs,
the environment and the command line of every process, and the Django project those processes
run (:class:`Project`: its directory, settings module and ASGI application). It starts nothing,
binds nothing and reads no clock, so every rule here is unit-tested without a process;
:class:`topics.devtools.local_cluster.LocalCluster` is what turns a plan into processes.

The nodes run the project's settings through :mod:`topics.devtools.cluster_settings`, which
adds the cluster's own generated ``SECRET_KEY`` (the file named by :data:`SECRET_FILE_ENV`):
whatever key the project's settings hold (a public development key, or ``django-insecure-...``),
a token signed with it opens no socket on the cluster.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from channel_layer.cluster import TS, WS
from topics.management.cluster_lookup import SECRET_FILE_NAME

REPOSITORY_DIR = Path(__file__).resolve().parents[2]  # where this repository's manage.py lives
SERVERS = ("daphne", "uvicorn")
# The listen backlog of WS nodes (the kernel caps it at net.core.somaxconn, 4096 by default).
LISTEN_BACKLOG = 4096
# The servers' own keep-alive pings (daphne and uvicorn: every 20 s) are redundant on a Phoenix
# socket: its client heartbeats every 30 s and the consumer closes a socket silent for
# DPS_IDLE_TIMEOUT (60 s). They cost an idle node most of its CPU (10,000 sockets: 500 pings
# and pongs a second, each with a timer), so WS nodes run without them: uvicorn's 0 turns them
# off; daphne pings only a connection silent this long, which the idle timeout closes first.
DAPHNE_PING_ARGS = ("--ping-interval", "600")
UVICORN_PING_ARGS = ("--ws-ping-interval", "0")
# A local cluster is for development: DEBUG on and anonymous sockets allowed, unless the
# environment says otherwise (DPS_ALLOW_ANONYMOUS=0 tries a locked-down cluster). These are
# dps_site's variables; a project whose settings do not read them keeps its own values.
DEVELOPMENT_DEFAULTS = {"DJANGO_DEBUG": "1", "DPS_ALLOW_ANONYMOUS": "1"}
CLUSTER_SETTINGS = "topics.devtools.cluster_settings"
PROJECT_SETTINGS_ENV = "DPS_PROJECT_SETTINGS"  # the settings module cluster_settings wraps
SECRET_FILE_ENV = "DPS_CLUSTER_SECRET_FILE"  # the file holding the cluster's SECRET_KEY
CLUSTER_FILE_NAME = "cluster.json"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def node_suffix(index: int) -> str:
    """0 → "a", 25 → "z", 26 → "aa", 27 → "ab" ... (spreadsheet columns: names stay short)."""
    suffix = ""
    index += 1
    while index:
        index, digit = divmod(index - 1, len(_ALPHABET))
        suffix = _ALPHABET[digit] + suffix
    return suffix


@dataclass(frozen=True)
class Project:
    """The Django project the nodes run: the directory its processes run in (where its
    ``manage.py`` is), its settings module, and its ASGI application as ``module:attribute``."""

    directory: Path
    settings_module: str
    asgi_app: str

    @classmethod
    def repository_site(cls, settings_module: str = "dps_site.settings") -> Project:
        """This repository's own site (what tests and the benchmark run)."""
        return cls(REPOSITORY_DIR, settings_module, "dps_site.asgi:application")

    @classmethod
    def from_settings(cls, settings_module: str, asgi_application: str | None,
                      directory: Path) -> Project:
        """The project of a process whose settings are ``settings_module``, with Django's
        ``ASGI_APPLICATION`` (a dotted path, ``mysite.asgi.application``)."""
        if not asgi_application or "." not in asgi_application:
            raise ValueError(f"settings.ASGI_APPLICATION must name the ASGI application as "
                             f"module.attribute (e.g. topics.asgi.application), not "
                             f"{asgi_application!r}")
        module, attribute = asgi_application.rsplit(".", 1)
        return cls(directory, settings_module, f"{module}:{attribute}")


@dataclass(frozen=True)
class LocalNode:
    """One node of the local cluster; ``port`` is the WebSocket port of a WS node (which
    serves its metrics there too), ``metrics_port`` a topic server's metrics port. A node
    with ``spawned`` False is listed in the cluster file but run by someone else (the
    benchmark's stand-in WS nodes)."""

    name: str
    role: str
    port: int | None = None
    metrics_port: int | None = None
    spawned: bool = True


@dataclass(frozen=True)
class ClusterPlan:
    """Every node, port, Redis URL, environment and command line of a local cluster."""

    nodes: tuple[LocalNode, ...]
    project: Project
    host: str = "127.0.0.1"
    server: str = "daphne"
    shared_redis: str | None = None
    redis_urls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    base_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # uvicorn's access log and info lines off (the benchmark's baselines)
    quiet_servers: bool = False

    # -- the nodes -------------------------------------------------------------------------

    @property
    def ws_nodes(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.role == WS]

    @property
    def spawned_nodes(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.spawned]

    def node(self, name: str) -> LocalNode:
        return next(n for n in self.nodes if n.name == name)

    @property
    def ws_urls(self) -> list[str]:
        """The Phoenix socket URL of every WS node this cluster runs."""
        return [f"ws://{self.host}:{n.port}/socket/websocket?vsn=2.0.0"
                for n in self.ws_nodes if n.spawned]

    @property
    def demo_urls(self) -> list[str]:
        """The demo chat at ``/`` of every WS node."""
        return [f"http://{self.host}:{n.port}/" for n in self.ws_nodes if n.spawned]

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.ws_nodes[0].port}/admin/"

    def metrics_url(self, node: LocalNode) -> str:
        """Where ``node`` serves its Prometheus metrics."""
        return f"http://{self.host}:{node.port or node.metrics_port}/metrics"

    # -- Redis and the cluster file --------------------------------------------------------

    def with_redis(self, urls: Mapping[str, str]) -> ClusterPlan:
        """This plan once every node's own Redis runs at ``urls`` (node name → URL)."""
        return replace(self, redis_urls=MappingProxyType(dict(urls)))

    def redis_url(self, node: LocalNode) -> str:
        if self.shared_redis:
            return self.shared_redis
        try:
            return self.redis_urls[node.name]
        except KeyError:
            raise RuntimeError(f"{node.name}'s Redis has not been started") from None

    def cluster_config(self) -> dict[str, list[dict[str, str]]]:
        """The cluster file's content: every node's name, role and home Redis."""
        return {"nodes": [{"name": n.name, "role": n.role, "redis": self.redis_url(n)}
                          for n in self.nodes]}

    # -- processes -------------------------------------------------------------------------

    def child_env(self, workdir: str | Path) -> dict[str, str]:
        """The environment of every process the cluster starts (``migrate`` included)."""
        env = dict(self.base_env)
        # Inherited node identity would make migrate (or a node) join some other cluster.
        env.pop("DPS_NODE", None)
        env.pop("DPS_CLUSTER", None)
        for name, value in DEVELOPMENT_DEFAULTS.items():  # what the caller set explicitly wins
            env.setdefault(name, value)
        env["DJANGO_SETTINGS_MODULE"] = CLUSTER_SETTINGS
        env[PROJECT_SETTINGS_ENV] = self.project.settings_module
        env[SECRET_FILE_ENV] = str(Path(workdir, SECRET_FILE_NAME))
        env["PYTHONUNBUFFERED"] = "1"  # so the prefixed log stream is live, not block-buffered
        return env

    def env_for(self, node: LocalNode, workdir: str | Path) -> dict[str, str]:
        """The environment a node process runs with."""
        return {**self.child_env(workdir), "DPS_NODE": node.name,
                "DPS_CLUSTER": str(Path(workdir, CLUSTER_FILE_NAME))}

    def development_settings(self) -> dict[str, str]:
        """The development defaults the nodes run with, as they will see them."""
        return {name: self.base_env.get(name, value)
                for name, value in DEVELOPMENT_DEFAULTS.items()}

    def migrate_command(self) -> list[str]:
        return [sys.executable, "-m", "django", "migrate", "--noinput"]

    def command_for(self, node: LocalNode) -> list[str]:
        """The command line of a node process (run in the project's directory)."""
        if node.role == TS:
            return [sys.executable, "-m", "django", "topic_server", "--metrics-host", self.host,
                    "--metrics-port", str(node.metrics_port)]
        assert node.port is not None
        return self.ws_command(node.port)

    def ws_command(self, port: int) -> list[str]:
        """A WS node's server on ``port``, serving the project's ASGI application."""
        # The server must pass frames somewhat over the socket's own limit through, so that
        # the Phoenix socket (not the server) answers them with its specified close 1009.
        frame_limit = str(4 * int(self.base_env.get("DPS_MAX_FRAME_BYTES", 1024 * 1024)))
        if self.server == "uvicorn":
            quiet = ("--log-level", "warning", "--no-access-log") if self.quiet_servers else ()
            return [sys.executable, "-m", "uvicorn", "--host", self.host, "--port", str(port),
                    "--backlog", str(LISTEN_BACKLOG), *UVICORN_PING_ARGS, *quiet,
                    "--ws-max-size", frame_limit, self.project.asgi_app]
        # An endpoint string, as -b/-p leave Twisted's listen backlog at 50: a connection storm
        # then waits on SYN retries (seconds) instead of the accept loop (milliseconds).
        endpoint = f"tcp:port={port}:interface={self.host}:backlog={LISTEN_BACKLOG}"
        return [sys.executable, "-m", "daphne", "-e", endpoint, *DAPHNE_PING_ARGS,
                "--websocket-max-message-size", frame_limit, "--websocket-max-frame-size",
                frame_limit, self.project.asgi_app]


def plan_cluster(
    ws: int = 2,
    ts: int = 2,
    *,
    port: int = 8000,
    host: str = "127.0.0.1",
    server: str = "daphne",
    redis: str | None = None,
    project: Project | None = None,
    base_env: Mapping[str, str] | None = None,
    standins: int = 0,
    quiet_servers: bool = False,
    free_port: Callable[[str], int],
) -> ClusterPlan:
    """The plan of ``ws`` WS nodes on ``host:port``, ``port+1``, ... and ``ts`` topic servers,
    each with a metrics port from ``free_port(host)``; ``standins`` more WS nodes are listed in
    the cluster file but not run. Raises ValueError for a shape that cannot run."""
    if ws < 1 or ts < 0:
        raise ValueError("a cluster needs at least one WS node")
    if port < 1 or port + ws - 1 > 65535:
        raise ValueError(f"WS ports {port}..{port + ws - 1} are not all valid TCP ports")
    if server not in SERVERS:
        raise ValueError(f"server must be one of {SERVERS}, not {server!r}")
    env = dict(base_env or {})
    nodes = ([LocalNode(f"ws-{node_suffix(i)}", WS, port + i) for i in range(ws)]
             + [LocalNode(f"ws-{node_suffix(ws + i)}", WS, spawned=False)
                for i in range(standins)]
             + [LocalNode(f"ts-{node_suffix(i)}", TS, metrics_port=free_port(host))
                for i in range(ts)])
    if project is None:
        project = Project.repository_site(env.get("DJANGO_SETTINGS_MODULE", "dps_site.settings"))
    return ClusterPlan(tuple(nodes), project, host=host, server=server, shared_redis=redis,
                       base_env=MappingProxyType(env), quiet_servers=quiet_servers)
