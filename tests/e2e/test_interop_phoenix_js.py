"""Interop: the official Phoenix JavaScript client (npm ``phoenix``) against a real 2-WS-node cluster.

One cluster and one run of ``tests/interop/interop.mjs`` serve the whole module; each scenario
the script reports is asserted by its own test, so a failure names the scenario. The cluster runs
with a lowered ``DPS_IDLE_TIMEOUT`` so that the heartbeat scenario spans more than twice the
server's idle timeout, and a control scenario checks that a silent socket is indeed closed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import PROJECT_DIR, LocalCluster

pytestmark = pytest.mark.e2e

INTEROP_DIR = Path(__file__).resolve().parents[1] / "interop"
SCRIPT = INTEROP_DIR / "interop.mjs"
IDLE_TIMEOUT_S = 5  # seconds; the script's sockets heartbeat every 2 s (0.5 s in the heartbeat scenario)
NODE_TIMEOUT_S = 60
NPM_TIMEOUT_S = 180
WS_SUFFIX = "/websocket?vsn=2.0.0"

SCENARIOS = [
    "join_on_both_nodes",
    "publish_reaches_all_members_once",
    "ordered_exactly_once_across_nodes",
    "leave_stops_delivery",
    "non_topics_join_refused",
    "heartbeats_keep_socket_open",
    "binary_arraybuffer_on_both_nodes",
    "longpoll_and_websocket_in_one_order",
    "longpoll_fallback_when_websocket_refused",
]
IDLE_SCENARIO = "idle_socket_closed_by_server"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: the Phoenix JS interop test needs Node.js and npm")
    return path


def _ensure_node_modules() -> None:
    """Install the pinned client like CI does (``npm ci``) when node_modules is missing."""
    if (INTEROP_DIR / "node_modules" / "phoenix" / "package.json").is_file() and (
        INTEROP_DIR / "node_modules" / "ws" / "package.json"
    ).is_file():
        return
    result = subprocess.run(
        [_tool("npm"), "ci", "--no-audit", "--no-fund"], cwd=INTEROP_DIR,
        capture_output=True, text=True, timeout=NPM_TIMEOUT_S,
    )
    if result.returncode:
        pytest.fail(f"npm ci in {INTEROP_DIR} failed ({result.returncode}):\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")


def _node_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DPS_NODE", None)
    env.pop("DPS_CLUSTER", None)
    return env


def _idle_timeout_from_env() -> bool:
    """Whether the settings honour DPS_IDLE_TIMEOUT from the environment (as the nodes would)."""
    env = {**_node_env(), "DPS_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S),
           "DJANGO_SETTINGS_MODULE": "dps_site.settings"}
    probe = ("from django.conf import settings; "
             "print(float(getattr(settings, 'DPS_IDLE_TIMEOUT', 60)))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    if result.returncode:
        pytest.fail(f"could not read the settings: {result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1]) == IDLE_TIMEOUT_S


class InteropRun:
    def __init__(self, returncode: int, stdout: str, stderr: str, cluster_log: list[str],
                 idle_lowered: bool) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.cluster_log = cluster_log
        self.idle_lowered = idle_lowered
        self.results: dict[str, dict] = {}
        self.summary: dict | None = None
        for line in stdout.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if record.get("summary"):
                self.summary = record
            elif "scenario" in record:
                self.results[record["scenario"]] = record

    def context(self) -> str:
        log = "\n".join(self.cluster_log[-40:])
        return (f"node exit code {self.returncode}\n--- stdout\n{self.stdout[-6000:]}\n"
                f"--- stderr\n{self.stderr[-4000:]}\n--- cluster log (tail)\n{log}")


@pytest.fixture(scope="module")
def interop_run() -> InteropRun:
    node = _tool("node")
    _ensure_node_modules()
    idle_lowered = _idle_timeout_from_env()
    env = _node_env()
    if idle_lowered:
        env["DPS_IDLE_TIMEOUT"] = str(IDLE_TIMEOUT_S)
    log: list[str] = []
    with LocalCluster(ws=2, ts=2, port=free_port_block(2), base_env=env, emit=log.append) as cluster:
        urls = []
        for url in cluster.ws_urls:
            assert url.endswith(WS_SUFFIX), url
            urls.append(url.removesuffix(WS_SUFFIX))  # phoenix.js appends /websocket?vsn=2.0.0
        command = [node, str(SCRIPT), *urls]
        if idle_lowered:
            command += ["--idle-timeout", str(IDLE_TIMEOUT_S)]
        try:
            result = subprocess.run(command, cwd=INTEROP_DIR, capture_output=True, text=True,
                                    timeout=NODE_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            def text(data: bytes | str | None) -> str:
                return data.decode(errors="replace") if isinstance(data, bytes) else data or ""

            return InteropRun(-1, text(exc.stdout), text(exc.stderr) + "\n(timed out)", log,
                              idle_lowered)
    return InteropRun(result.returncode, result.stdout, result.stderr, log, idle_lowered)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(interop_run: InteropRun, scenario: str) -> None:
    result = interop_run.results.get(scenario)
    assert result is not None, f"the script reported no result for {scenario}\n{interop_run.context()}"
    assert result["ok"], (f"{scenario}: {result.get('error')}\ndetails: {result.get('details')}\n"
                          f"{interop_run.context()}")


def test_idle_socket_closed_by_server(interop_run: InteropRun) -> None:
    """The control of the heartbeat scenario: without heartbeats the server closes the socket."""
    # Without a lowered idle timeout the heartbeat scenario would only prove that heartbeats
    # are answered: that is a failure of the test's setup, not a reason to pass quietly.
    assert interop_run.idle_lowered, "DPS_IDLE_TIMEOUT could not be lowered from the environment"
    test_scenario(interop_run, IDLE_SCENARIO)


def test_run_summary(interop_run: InteropRun) -> None:
    """The script ran to its end, reported every scenario, and its exit code agrees."""
    expected = set(SCENARIOS) | ({IDLE_SCENARIO} if interop_run.idle_lowered else set())
    assert interop_run.summary is not None, f"no summary line\n{interop_run.context()}"
    assert set(interop_run.results) == expected, interop_run.context()
    all_ok = all(r["ok"] for r in interop_run.results.values())
    assert interop_run.summary["ok"] is all_ok, interop_run.context()
    assert (interop_run.returncode == 0) is all_ok, interop_run.context()
