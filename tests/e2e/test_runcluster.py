"""runcluster and topics.devtools.local_cluster: naming, the cluster file, orchestration, the CLI.

The orchestration tests run fake node processes (a few lines of Python) so they check process
handling alone; ``test_runcluster_end_to_end`` runs the real command with daphne/uvicorn and
topic_server nodes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError

from channel_layer.cluster import NODE_NAME, parse_cluster
from channel_layer.ring import Ring
from tests.support.command_process import OutputLines, stop_gracefully
from tests.support.waiting import wait_until
from topics.devtools.embedded_redis import accepts_connections, free_port_block, port_is_free, redis_ping
from topics.devtools.local_cluster import (
    LISTEN_BACKLOG,
    PROJECT_DIR,
    ClusterError,
    LocalCluster,
    LocalNode,
    node_suffix,
)
from topics.devtools.supervisor import Backoff, RestartPolicy, describe_exit
from topics.management.commands.runcluster import READY_LINE, Command

# A stand-in node: reports what it sees, listens on its port if it is a WS node (a TS node says it
# serves, as the real one does), and can be told (through FAKE_* variables) to exit early, never
# listen, or ignore SIGTERM.
FAKE_NODE = """
import json, os, signal, socket, sys, time
role, port = sys.argv[1], int(sys.argv[2])
nodes = json.load(open(os.environ["DPS_CLUSTER"]))["nodes"]
print(f"fake {os.environ['DPS_NODE']} sees {len(nodes)} nodes", flush=True)
if os.environ.get("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
exits = role == os.environ.get("FAKE_EXIT_ROLE")
code = int(os.environ.get("FAKE_EXIT_CODE", "3"))
once = os.environ.get("FAKE_EXIT_ONCE_DIR")
if exits and once:  # only the first run of each node exits
    marker = os.path.join(once, os.environ["DPS_NODE"])
    exits = not os.path.exists(marker)
    open(marker, "w").close()
if exits and "FAKE_EXIT_AFTER" not in os.environ:
    sys.exit(code)  # dies while starting
if role == "ws" and not os.environ.get("FAKE_WS_SILENT"):
    server = socket.create_server(("127.0.0.1", port))
if role == "ts" and not os.environ.get("FAKE_TS_SILENT"):
    print(f"topic server {os.environ['DPS_NODE']} serving", flush=True)
if exits:
    time.sleep(float(os.environ["FAKE_EXIT_AFTER"]))  # the fake's scripted lifetime
    sys.exit(code)  # dies once the cluster runs
while True:
    time.sleep(1)  # the fake's scripted lifetime
"""


class FakeNodeCluster(LocalCluster):
    def command_for(self, node: LocalNode) -> list[str]:
        return [sys.executable, "-c", FAKE_NODE, node.role, str(node.port or 0)]


def fake_cluster(lines: list[str], ws: int = 2, ts: int = 2, supervise: bool = False,
                 policy: RestartPolicy | None = None, **env: str) -> FakeNodeCluster:
    return FakeNodeCluster(ws, ts, port=free_port_block(ws), migrate=False, emit=lines.append,
                           base_env={**os.environ, **env}, supervise=supervise,
                           restart_policy=policy)


def count(lines: list[str], text: str) -> int:
    return sum(text in line for line in list(lines))


# -- naming and configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "suffix"), [(0, "a"), (1, "b"), (25, "z"), (26, "aa"), (27, "ab"), (701, "zz"),
                          (702, "aaa")],
)
def test_node_suffix(index: int, suffix: str) -> None:
    assert node_suffix(index) == suffix


def test_sixteen_nodes_of_each_role_get_unique_valid_names() -> None:
    cluster = LocalCluster(16, 16, port=9000)
    names = [n.name for n in cluster.nodes]
    assert len(set(names)) == 32
    assert all(NODE_NAME.fullmatch(name) for name in names)
    assert names[:3] == ["ws-a", "ws-b", "ws-c"] and names[16:18] == ["ts-a", "ts-b"]


def test_ws_nodes_listen_on_consecutive_ports() -> None:
    cluster = LocalCluster(3, 1, port=9000, host="127.0.0.2")
    assert [(n.name, n.port) for n in cluster.ws_nodes] == [
        ("ws-a", 9000), ("ws-b", 9001), ("ws-c", 9002)]
    assert cluster.ws_urls[1] == "ws://127.0.0.2:9001/socket/websocket?vsn=2.0.0"
    assert cluster.plan.admin_url == "http://127.0.0.2:9000/admin/"


@pytest.mark.parametrize(
    "kwargs", [{"ws": 0}, {"ts": 0}, {"port": 65535, "ws": 2}, {"server": "gunicorn"}],
)
def test_invalid_cluster_shapes_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LocalCluster(**kwargs)


def test_shared_redis_config_has_the_exact_cluster_file_shape() -> None:
    cluster = LocalCluster(1, 2, redis="redis://10.0.0.5:6400/1")
    assert cluster.plan.cluster_config() == {"nodes": [
        {"name": "ws-a", "role": "ws", "redis": "redis://10.0.0.5:6400/1"},
        {"name": "ts-a", "role": "ts", "redis": "redis://10.0.0.5:6400/1"},
        {"name": "ts-b", "role": "ts", "redis": "redis://10.0.0.5:6400/1"},
    ]}
    assert len(parse_cluster(cluster.plan.cluster_config(), "test").ts_nodes) == 2


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_node_command_lines_use_this_python(server: str) -> None:
    cluster = LocalCluster(1, 1, port=9100, host="0.0.0.0", server=server)
    ws, ts = cluster.nodes
    assert cluster.command_for(ts) == [sys.executable, "-m", "django", "topic_server",
                                       "--metrics-host", "0.0.0.0",
                                       "--metrics-port", str(ts.metrics_port)]
    command = cluster.command_for(ws)
    assert command[:3] == [sys.executable, "-m", server]
    assert command[-1] == "dps_site.asgi:application"
    if server == "daphne":  # an endpoint string: -b/-p would leave the listen backlog at 50
        assert f"tcp:port=9100:interface=0.0.0.0:backlog={LISTEN_BACKLOG}" in command
    else:
        assert {"0.0.0.0", "9100"} <= set(command)
        assert command[command.index("--backlog") + 1] == str(LISTEN_BACKLOG)


def parse(*argv: str) -> dict:
    return vars(Command().create_parser("manage.py", "runcluster").parse_args(argv))


def test_command_defaults() -> None:
    options = parse()
    assert (options["ws"], options["ts"], options["port"], options["host"]) == (
        2, 2, 8000, "127.0.0.1")
    assert (options["redis"], options["server"], options["migrate"]) == (None, "daphne", True)


def test_command_flags() -> None:
    assert parse()["fail_fast"] is False and parse("--fail-fast")["fail_fast"] is True
    options = parse("--ws", "4", "--ts", "3", "--port", "9000", "--redis", "redis://h:1/0",
                    "--server", "uvicorn", "--host", "0.0.0.0", "--no-migrate")
    assert (options["ws"], options["ts"], options["port"], options["host"]) == (
        4, 3, 9000, "0.0.0.0")
    assert (options["redis"], options["server"], options["migrate"]) == (
        "redis://h:1/0", "uvicorn", False)


@pytest.mark.parametrize("argv", [("--ws", "0"), ("--ts", "-1"), ("--server", "gunicorn")])
def test_command_rejects_bad_flags(argv: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        parse(*argv)


# -- orchestration, with fake nodes --------------------------------------------------------


def test_cluster_starts_every_node_with_its_own_redis_and_stops_cleanly() -> None:
    lines: list[str] = []
    cluster = fake_cluster(lines).start(timeout=20)
    try:
        workdir = cluster.workdir
        config = json.loads(cluster.cluster_file.read_text())
        urls = [n["redis"] for n in config["nodes"]]
        assert [n["name"] for n in config["nodes"]] == ["ws-a", "ws-b", "ts-a", "ts-b"]
        assert len(set(urls)) == 4
        redis_ports = [int(url.rsplit(":", 1)[1].split("/")[0]) for url in urls]
        assert all(redis_ping(port) for port in redis_ports)
        assert all(accepts_connections(n.port) for n in cluster.ws_nodes)
        assert cluster.plan.env_for(cluster.nodes[2], cluster.workdir)["DPS_NODE"] == "ts-a"
        assert cluster.poll() is None
    finally:
        cluster.stop()
    for name in ("ws-a", "ws-b", "ts-a", "ts-b"):
        assert f"[{name}] fake {name} sees 4 nodes" in lines
    assert workdir and not os.path.exists(workdir)
    assert not any(redis_ping(port) for port in redis_ports)
    assert all(port_is_free(n.port) for n in cluster.ws_nodes)
    cluster.stop()  # idempotent


def test_shared_redis_url_is_used_by_every_node_and_never_logged_with_its_password() -> None:
    lines: list[str] = []
    url = "redis://dps:hunter2@127.0.0.1:1/0"  # the fake nodes never connect to it
    cluster = FakeNodeCluster(1, 1, port=free_port_block(1), redis=url, migrate=False,
                              emit=lines.append)
    with cluster:
        config = json.loads(cluster.cluster_file.read_text())
        assert {n["redis"] for n in config["nodes"]} == {url}
    assert "[runcluster] every node uses Redis redis://dps:***@127.0.0.1:1/0" in lines
    assert not any("hunter2" in line for line in lines)


def test_a_bad_shared_redis_url_is_refused_without_showing_its_password() -> None:
    cluster = FakeNodeCluster(1, 1, port=free_port_block(1), redis="http://u:hunter2@h/0",
                              migrate=False, emit=[].append)
    with pytest.raises(ClusterError, match="scheme") as failure:
        cluster.start()
    assert "hunter2" not in str(failure.value)
    assert cluster.workdir is None


def test_a_redis_that_cannot_start_fails_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'no memory today' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("DPS_REDIS_SERVER", str(fake))
    cluster = fake_cluster([], ws=1, ts=1)
    with pytest.raises(ClusterError, match="(?s)redis for ws-a: .*no memory today"):
        cluster.start()
    assert cluster.workdir is None


def test_a_node_dying_during_start_fails_the_start_and_cleans_up() -> None:
    lines: list[str] = []
    cluster = fake_cluster(lines, FAKE_EXIT_ROLE="ts")
    # Both fake topic servers die; whichever the runner notices first is reported.
    with pytest.raises(ClusterError, match="ts-[ab] exited unexpectedly with exit code 3"):
        cluster.start(timeout=20)
    assert cluster.workdir is None and cluster.poll() is None


def test_a_node_dying_later_is_reported_by_wait() -> None:
    cluster = fake_cluster([], FAKE_EXIT_ROLE="ts", FAKE_EXIT_AFTER="3")
    with cluster:
        assert re.fullmatch("ts-[ab] exited unexpectedly with exit code 3", cluster.wait())


def test_a_node_that_never_listens_times_out() -> None:
    cluster = fake_cluster([], ws=1, FAKE_WS_SILENT="1")
    with pytest.raises(ClusterError, match="not ready after 1s: ws-a not accepting connections"):
        cluster.start(timeout=1)
    assert cluster.workdir is None


def test_a_topic_server_that_never_serves_times_out() -> None:
    cluster = fake_cluster([], ws=1, ts=1, FAKE_TS_SILENT="1")
    with pytest.raises(ClusterError, match="not ready after 1s: ts-a not serving"):
        cluster.start(timeout=1)
    assert cluster.workdir is None


def test_a_busy_ws_port_is_refused_up_front() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        cluster = FakeNodeCluster(1, 1, port=port, migrate=False, emit=[].append)
        with pytest.raises(ClusterError, match=f"port {port} .* is in use"):
            cluster.start()


def test_a_node_ignoring_sigterm_is_killed() -> None:
    lines: list[str] = []
    cluster = fake_cluster(lines, ws=1, ts=1, FAKE_IGNORE_TERM="1").start(timeout=20)
    time.sleep(0.3)  # let the fakes install their handler
    started = time.monotonic()
    cluster.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    assert any("did not stop within 0.5s; killing it" in line for line in lines)


def test_request_stop_ends_wait() -> None:
    with fake_cluster([], ws=1, ts=1) as cluster:
        threading.Timer(0.3, cluster.request_stop).start()
        assert cluster.wait() is None


# -- supervision, with fake nodes ----------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(RestartPolicy(first_delay=0.5, max_delay=2.0, stable_after=30.0))
    assert [backoff.next_delay(1.0) for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert backoff.next_delay(31.0) == 0.5
    assert backoff.restarts == 5


def test_exit_descriptions_name_the_signal() -> None:
    assert describe_exit(-9) == "exit code -9 (SIGKILL)"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"


@pytest.mark.parametrize("code", [0, 3])
def test_a_supervised_node_that_exits_is_restarted_while_the_rest_keeps_serving(
    tmp_path: Path, code: int
) -> None:
    lines: list[str] = []
    cluster = fake_cluster(lines, ws=1, ts=2, supervise=True, FAKE_EXIT_ROLE="ts",
                           FAKE_EXIT_AFTER="0.5", FAKE_EXIT_CODE=str(code),
                           FAKE_EXIT_ONCE_DIR=str(tmp_path))
    with cluster:
        ws_port = cluster.ws_nodes[0].port
        for name in ("ts-a", "ts-b"):
            wait_until(lambda name=name: count(lines, f"[{name}] fake {name} sees") == 2)
            assert count(lines, f"[runcluster] {name} exited with exit code {code} after") == 1
            assert count(lines, f"[runcluster] {name} started (pid") == 2
        assert accepts_connections(ws_port)  # the WS node was never touched
        assert cluster.poll() is None  # every process runs again
    assert count(lines, "exited with") == 2  # the stop is not reported as a death


def test_a_sigkilled_node_and_a_killed_redis_are_restarted(tmp_path: Path) -> None:
    lines: list[str] = []
    with fake_cluster(lines, ws=1, ts=1, supervise=True) as cluster:
        ws = cluster.ws_nodes[0]
        first_pid = cluster.pid_of("ws-a")
        os.kill(first_pid, signal.SIGKILL)
        wait_until(lambda: cluster.pid_of("ws-a") not in (None, first_pid) and accepts_connections(ws.port))
        assert count(lines, "[runcluster] ws-a exited with exit code -9 (SIGKILL)") == 1
        redis_url = cluster.plan.cluster_config()["nodes"][1]["redis"]
        redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        os.kill(cluster.redis_pid("ts-a"), signal.SIGKILL)
        wait_until(lambda: count(lines, "[runcluster] redis for ts-a restarted") == 1)
        assert redis_ping(redis_port)  # same port: the cluster file stays true
        assert count(lines, "[runcluster] redis for ts-a exited with exit code -9") == 1


def test_a_node_that_keeps_dying_is_restarted_with_growing_delays() -> None:
    lines: list[str] = []
    policy = RestartPolicy(first_delay=0.1, max_delay=0.4, stable_after=60)
    with fake_cluster(lines, ws=1, ts=1, supervise=True, policy=policy, FAKE_EXIT_ROLE="ts",
                      FAKE_EXIT_AFTER="0.2"):
        wait_until(lambda: count(lines, "ts-a exited with exit code 3") >= 4)
    delays = [re.search(r"restarting it in ([\d.]+)s", line).group(1)
              for line in lines if "ts-a exited with" in line][:4]
    assert delays == ["0.1", "0.2", "0.4", "0.4"]


def test_an_unsupervised_cluster_restarts_nothing() -> None:
    lines: list[str] = []
    cluster = fake_cluster(lines, ws=1, ts=1, FAKE_EXIT_ROLE="ts", FAKE_EXIT_AFTER="0.3")
    with cluster:
        assert cluster.wait() == "ts-a exited unexpectedly with exit code 3"
        assert cluster.pid_of("ts-a") is not None  # still the dead child: nothing respawned
    assert count(lines, "ts-a started (pid") == 1


def test_a_port_left_in_time_wait_counts_as_free() -> None:
    """A stopped server's accepted connections linger in TIME_WAIT on its port: that must not
    stop the next runcluster from starting (a live listener still does)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end goes to TIME_WAIT
    client.recv(1)
    client.close()
    assert not port_is_free(port, allow_time_wait=True)  # still listening
    server.close()
    assert port_is_free(port, allow_time_wait=True)
    assert not port_is_free(port)  # automatic port choices still avoid it


# -- the real command, end to end ----------------------------------------------------------


@pytest.fixture
def runcluster(tmp_path: Path) -> Iterator[callable]:
    procs: list[subprocess.Popen[str]] = []

    def start(*argv: str) -> subprocess.Popen[str]:
        env = {**os.environ, "DPS_DATABASE": str(tmp_path / "db.sqlite3")}
        env.pop("DPS_NODE", None)
        env.pop("DPS_CLUSTER", None)
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runcluster", *argv], cwd=PROJECT_DIR, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_gracefully(proc)


@pytest.mark.e2e
@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_runcluster_end_to_end(runcluster: callable, server: str) -> None:
    port = free_port_block(2)
    proc = runcluster("--ws", "2", "--ts", "2", "--port", str(port), "--server", server)
    lines = OutputLines(proc)
    cluster_file = lines.wait_for("cluster file: ", 30).split("cluster file: ", 1)[1]
    workdir = os.path.dirname(cluster_file)
    lines.wait_for(READY_LINE, 120)
    assert accepts_connections(port) and accepts_connections(port + 1)
    assert f"ws://127.0.0.1:{port + 1}/socket/websocket?vsn=2.0.0" in "\n".join(lines.all)
    time.sleep(1)  # TS nodes need not have logged by the time the WS ports listen
    output = lines.drain()
    for name in ("ws-a", "ws-b", "ts-a", "ts-b"):
        assert any(line.startswith(f"[{name}] ") for line in output), f"no log line from {name}"

    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, "\n".join(lines.drain())
    lines.wait_for("[runcluster] stopped", 5)
    assert not os.path.exists(workdir)
    assert port_is_free(port) and port_is_free(port + 1)


async def _round_trip(port: int, topic: str) -> None:
    """A member on each WS node; a publish on one reaches both: the cluster serves."""
    from tests.support.phoenix_client import PhoenixClient, socket_url

    async with await PhoenixClient.connect(socket_url(port)) as a, \
            await PhoenixClient.connect(socket_url(port + 1)) as b:
        await a.join_ok(topic)
        await b.join_ok(topic)
        await a.publish(topic, "event", {"n": 1})
        for client in (a, b):
            [push] = await client.pushes(topic, 1)
            assert push.payload == {"n": 1}


@pytest.mark.e2e
def test_runcluster_restarts_a_killed_topic_server_and_starts_again_right_after_a_stop(
    runcluster: callable,
) -> None:
    import asyncio

    port = free_port_block(2)
    proc = runcluster("--port", str(port), "--no-migrate")
    lines = OutputLines(proc)
    pid = int(re.search(r"ts-a started \(pid (\d+)\)", lines.wait_for("ts-a started", 60))[1])
    lines.wait_for(READY_LINE, 120)
    asyncio.run(_round_trip(port, "topics:before"))

    os.kill(pid, signal.SIGKILL)
    lines.wait_for("[runcluster] ts-a exited with exit code -9 (SIGKILL)", 10)
    lines.wait_for("[ts-a] topic server ts-a serving", 30)  # the restarted process
    # Topics the restarted server owns work again, with clients that were never told.
    ring = Ring(["ts-a", "ts-b"])
    owned = [t for t in (f"topics:after{i}" for i in range(20))
             if ring.owner_of(t.replace(":", ".")) == "ts-a"][:2]
    for topic in owned:
        asyncio.run(_round_trip(port, topic))
    assert proc.poll() is None

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, "\n".join(lines.drain())
    # At once, on the same ports, while the last run's connections sit in TIME_WAIT.
    again = runcluster("--port", str(port), "--no-migrate")
    again_lines = OutputLines(again)
    again_lines.wait_for(READY_LINE, 120)
    asyncio.run(_round_trip(port, "topics:again"))
    again.send_signal(signal.SIGINT)
    assert again.wait(30) == 0, "\n".join(again_lines.drain())


def test_a_node_removed_from_the_cluster_file_is_not_restarted() -> None:
    lines: list[str] = []
    with fake_cluster(lines, ws=1, ts=2, supervise=True) as cluster:
        config = json.loads(cluster.cluster_file.read_text())
        config["nodes"] = [n for n in config["nodes"] if n["name"] != "ts-b"]
        cluster.cluster_file.write_text(json.dumps(config))
        os.kill(cluster.pid_of("ts-b"), signal.SIGTERM)  # as a drained topic server exits
        wait_until(lambda: count(lines, "ts-b exited with exit code -15 (SIGTERM) and is no "
                                        "longer in the cluster file; not restarting it") == 1)
        assert cluster.pid_of("ts-b") is None and cluster.pid_of("ts-a") is not None
    assert count(lines, "ts-b started (pid") == 1
