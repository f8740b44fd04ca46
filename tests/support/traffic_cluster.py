"""A cluster for failure tests: a Redis per node, topic servers, two WS nodes under daphne, and
on each WS node a Phoenix client that is a member of every topic and publishes to all of them
throughout (``tests.support.traffic_client``); then checks of what the clients saw."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

from channel_layer.ring import Ring
from tests.support.processes import (
    free_port,
    go,
    start_topic_server,
    start_traffic,
    start_ws_node,
    stop_all,
    write_cluster_file,
)

# Shorter than the default (5 s) to keep the suite short; DPS_TEST_FAILOVER_AFTER=5 runs the
# failover tests with the default, heartbeat_interval included.
FAILOVER_AFTER = float(os.environ.get("DPS_TEST_FAILOVER_AFTER", 3.0))
HEARTBEAT = 0.5 if FAILOVER_AFTER < 5 else 1.0
SETTINGS = json.dumps({"ts_failover_after": FAILOVER_AFTER, "heartbeat_interval": HEARTBEAT,
                       "stats_interval": 0.5, "ring_settle_time": 2.0})
TOPICS = [f"fo{i}" for i in range(20)]


def owned_by(ring: Ring, owner: str) -> list[str]:
    return [t for t in TOPICS if ring.owner_of(f"topics.{t}") == owner]


class Cluster:
    """Two TS and two WS nodes, each node with its own Redis and (optionally) its own copy
    of the cluster file, so a test can let nodes notice an edit at different times."""

    def __init__(self, tmp_path: Path, redis_factory, ts: tuple[str, ...] = ("ts-a", "ts-b"),
                 spare_ts: tuple[str, ...] = (), settings: str = SETTINGS) -> None:
        self.tmp = tmp_path
        self.settings = settings
        self.urls = {n: redis_factory().url for n in ("ws-a", "ws-b", *ts, *spare_ts)}
        self.ts = list(ts)
        self.procs: dict[str, subprocess.Popen] = {}
        self.files: dict[str, Path] = {}
        self.ports = {"ws-a": free_port(), "ws-b": free_port()}

    def members(self, ts: list[str]) -> dict[str, str]:
        return {n: self.urls[n] for n in ("ws-a", "ws-b", *ts)}

    def write_file(self, node: str, ts: list[str]) -> Path:
        folder = self.tmp / node
        folder.mkdir(exist_ok=True)
        self.files[node] = write_cluster_file(folder, self.members(ts))
        return self.files[node]

    def start(self) -> None:
        for ts in self.ts:
            self.start_ts(ts, self.ts)
        for ws in ("ws-a", "ws-b"):
            self.procs[ws] = start_ws_node(self.write_file(ws, self.ts), ws, self.ports[ws],
                                           self.tmp / f"{ws}.log", DPS_LAYER=self.settings)

    def start_ts(self, name: str, ts: list[str]) -> None:
        self.procs[name] = start_topic_server(self.write_file(name, ts), name,
                                              DPS_LAYER=self.settings)

    def traffic(self, seconds: float, interval: float = 0.25) -> dict[str, subprocess.Popen]:
        clients = {ws: start_traffic(self.files[ws], self.ports[ws], TOPICS, ws, seconds,
                                     interval) for ws in ("ws-a", "ws-b")}
        go(list(clients.values()))  # both have joined
        return clients

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        stop_all(list(self.procs.values()))
        for name, proc in self.procs.items():
            if proc.stdout is not None and not proc.stdout.closed:
                (self.tmp / f"{name}.log").write_text(proc.stdout.read())

    def log(self, node: str) -> str:
        path = self.tmp / f"{node}.log"
        return path.read_text() if path.exists() else ""


def collect(clients: dict[str, subprocess.Popen], tmp_path: Path) -> dict[str, dict]:
    """Every client's report, also kept in ``tmp_path`` for a failure's post-mortem."""
    reports = {}
    for name, proc in clients.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        reports[name] = json.loads(out.strip().splitlines()[-1])
    (tmp_path / "reports.json").write_text(json.dumps(reports))
    return reports


def check_exactly_once_in_order(reports: dict[str, dict], all_ok: bool = False) -> list[dict]:
    """Every ok'd publish delivered once to every client, per publisher in order; nothing
    that was not ok'd delivered (and, with ``all_ok``, every publish ok'd). Returns all
    publishes."""
    publishes = [p for r in reports.values() for p in r["publishes"]]
    assert all(p["status"] is not None for p in publishes), "a publish got no reply"
    if all_ok:
        assert all(p["status"] == "ok" for p in publishes), "a publish was refused"
    ok = {(p["topic"], p["from"], p["seq"]) for p in publishes if p["status"] == "ok"}
    for name, report in reports.items():
        got = [(p["topic"], p["from"], p["seq"]) for p in report["pushes"]]
        counts = Counter(got)
        twice = [k for k, n in counts.items() if n > 1]
        assert not twice, f"{name} got {len(twice)} message(s) twice, e.g. {twice[:3]}"
        lost = ok - set(counts)
        assert not lost, f"{name} lost {len(lost)} ok'd message(s), e.g. {sorted(lost)[:5]}"
        stray = set(counts) - ok
        assert not stray, f"{name} got message(s) never answered ok: {sorted(stray)[:5]}"
        last: dict[tuple[str, str], int] = {}
        for topic, sender, seq in got:
            assert seq > last.get((topic, sender), -1), f"{name}: {topic} from {sender} out of order"
            last[(topic, sender)] = seq
    return publishes


def recovery_gap(reports: dict[str, dict], topics: list[str], fault_at: float) -> float:
    """Seconds from the fault until every one of ``topics`` delivered, to every client, a
    message published after the fault."""
    gaps = []
    for report in reports.values():
        for topic in topics:
            first = min(p["at"] for p in report["pushes"] if p["topic"] == f"topics:{topic}"
                        and p["at"] > fault_at)
            gaps.append(first - fault_at)
    return max(gaps)


