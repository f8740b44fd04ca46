"""Real node processes for multi-process tests: topic servers and WS-side workers."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_cluster_file(tmp_path: Path, urls: dict[str, str]) -> Path:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"nodes": [
        {"name": name, "role": name.split("-")[0], "redis": url} for name, url in urls.items()
    ]}))
    return path


def node_env(cluster_file: Path, node: str | None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DPS_CLUSTER": str(cluster_file), "PYTHONPATH": str(ROOT),
           "DJANGO_SETTINGS_MODULE": "dps_site.settings", **extra}
    env.pop("DPS_NODE", None)
    if node:
        env["DPS_NODE"] = node
    return env


def start_topic_server(cluster_file: Path, node: str, **extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "topic_server"],
        env=node_env(cluster_file, node, **extra), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"topic server {node} did not start: {line}{proc.stdout.read()}")
    return proc


class Worker:
    """A ``tests.support.ws_worker`` process."""

    def __init__(self, cluster_file: Path, node: str, *args: str, **extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.ws_worker", *args],
            env=node_env(cluster_file, node, **extra), cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def read_event(self, name: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker exited: {self.proc.stderr.read()}")
            event = json.loads(line)
            if event.get("event") == name:
                return event
        raise TimeoutError(name)

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ws_node(cluster_file: Path, node: str, port: int, log: Path,
                  **extra: str) -> subprocess.Popen:
    """A WS node under daphne on 127.0.0.1:``port``, its output in ``log``; returns once it
    accepts connections."""
    env = node_env(cluster_file, node, DPS_ALLOW_ANONYMOUS="1", **extra)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p",
                                 str(port), "dps_site.asgi:application"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    return wait_listening(proc, port, log, f"WS node {node}")


def wait_listening(proc: subprocess.Popen, port: int, log: Path, what: str,
                   timeout: float = 60) -> subprocess.Popen:
    """``proc`` once it accepts connections on 127.0.0.1:``port``; killed, with its ``log`` in
    the error, when it exits or ``timeout`` passes first."""
    from topics.devtools.embedded_redis import accepts_connections

    deadline = time.monotonic() + timeout
    while not accepts_connections(port, timeout=1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{what} did not start: {log.read_text()}")
        time.sleep(0.1)  # polling a port: there is nothing to wait on
    return proc


def start_traffic(cluster_file: Path, port: int, topics: list[str], name: str,
                  seconds: float, interval: float = 0.2, settle: float = 4) -> subprocess.Popen:
    """A ``tests.support.traffic_client`` on the WS node at ``port``; returns once joined.
    It publishes once a line is written to its stdin (``go``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.traffic_client",
         f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0", "--topics", ",".join(topics),
         "--seconds", str(seconds), "--interval", str(interval), "--settle", str(settle),
         "--name", name, "--wait-go"],
        cwd=ROOT, env=node_env(cluster_file, None), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if json.loads(line or "{}") != {"joined": True}:
        proc.kill()
        raise RuntimeError(f"traffic client {name} did not join: {line!r}")
    return proc


def go(clients: list[subprocess.Popen]) -> None:
    for client in clients:
        client.stdin.write("go\n")
        client.stdin.flush()


def listener(port: int) -> tuple[int, int]:
    """(pid, listen backlog) of the process listening on ``port`` (``ss``: Send-Q of a
    listening socket is its backlog)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    fields = out.split()
    return int(re.search(r"pid=(\d+)", out).group(1)), int(fields[2])


def peak_rss_mb(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+)", status.read()).group(1)) // 1024
