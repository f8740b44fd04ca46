"""The benchmark harness itself: a tiny ``manage.py benchmark --quick`` run (not a timed test).

Starts real clusters (DPS: 2 WS + 2 TS nodes with their Redis; local: one WS node), so it is an
e2e test; it checks the harness's plumbing and its delivery checks, not any number.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

STEP_FIELDS = {"rate", "published", "deliveries", "expected_deliveries", "delivered_per_s",
               "p50_ms", "p99_ms", "max_ms", "lost", "dups", "reorders", "order_violations",
               "cpu_us_per_delivery", "ok"}


def run_quick(out, backends: str, scenarios: str, timeout: float) -> tuple[str, dict]:
    """``manage.py benchmark --quick``: its output and its results.json."""
    proc = subprocess.run(
        [sys.executable, "manage.py", "benchmark", "--quick", "--backends", backends,
         "--scenarios", scenarios, "--duration", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads((out / "results.json").read_text())


def test_quick_fanout_on_dps_and_local(tmp_path):
    out = tmp_path / "bench"
    stdout, data = run_quick(out, "dps,local", "fanout", 120)
    assert "fanout" in stdout and "targets" in stdout

    assert data["meta"]["quick"] is True
    for backend in ("dps", "local"):
        fanout = data["results"][backend]["fanout"]
        assert fanout["members"] == 10
        assert len(fanout["steps"]) == 2, fanout["steps"]
        assert fanout["rss_per_connection"] is not None
        reference = fanout["cpu_reference"]  # the CPU comparison step, same rate everywhere
        assert reference["rate"] == 20
        for step in [*fanout["steps"], reference]:
            assert STEP_FIELDS <= set(step), STEP_FIELDS - set(step)
            assert step["published"] > 0
            assert step["deliveries"] == step["expected_deliveries"] == step["published"] * 10
            assert (step["lost"], step["dups"], step["reorders"], step["order_violations"]) \
                == (0, 0, 0, 0)
            assert step["publish_errors"] == 0
            assert step["cpu_us_per_delivery"] is not None
    dps_step = data["results"]["dps"]["fanout"]["steps"][-1]
    assert dps_step["redis_commands_per_publish"] > 0
    assert "publish" in dps_step["redis_calls_per_publish"]
    assert {t["target"] for t in data["targets"]}  # computed, whatever they say
    png = out / "fanout_p99.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_many_topics_and_idle_on_dps(tmp_path):
    out = tmp_path / "bench"
    stdout, data = run_quick(out, "dps", "many_topics,idle", 180)
    assert "marginal 20 -> 40 msg/s" in stdout and "idle (sockets on one WS node" in stdout

    results = data["results"]["dps"]
    many = results["many_topics"]
    assert [s["rate"] for s in many["steps"]] == [20, 40]
    for step in many["steps"]:
        assert step["deliveries"] == step["expected_deliveries"] == step["published"] * 2
        assert (step["lost"], step["dups"], step["reorders"], step["order_violations"]) \
            == (0, 0, 0, 0)
        assert {"ws", "ts", "redis"} <= set(step["cpu_us_per_publish_by_role"])
    assert many["marginal"]["from_rate"] == 20 and many["marginal"]["to_rate"] == 40
    # Every publish wakes processes (at least the owner's Redis and the owner): counted, and
    # priced by this machine's own wake-up cost.
    for step in many["steps"]:
        assert step["wakeups_per_publish"] >= 2
        assert {"ws", "ts", "redis"} <= set(step["wakeups_per_s_by_role"])
    assert "process wake-ups per publish" in stdout
    assert data["machine"]["floor"]["us_per_wakeup"] > 0
    idle = results["idle"]
    assert idle["sockets"] == 200 and idle["topics"] == 20
    assert 0 <= idle["ws_node_core_share"] <= idle["all_servers_core_share"]
    assert idle["ws_node_wakeups_per_s"] > 0  # 200 sockets' heartbeats at least
    png = out / "many_topics_cpu.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_capacity_on_dps_and_a_plain_consumer(tmp_path):
    """The capacity scenario end to end: servers pinned, the ladder, every delivery checked,
    the table and both plot files (no figure is asserted: it is a command, not a timed test)."""
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "manage.py", "benchmark", "--quick", "--scenarios", "capacity",
         "--backends", "dps,plain_redis_pubsub", "--shapes", "small_rooms",
         "--rates", "40,80", "--step-seconds", "1", "--server-cores", "0", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "capacity, small rooms" in proc.stdout and "limits raised" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    for backend in ("dps", "plain_redis_pubsub"):
        result = data["results"][backend]["capacity"]["small_rooms"]
        assert result["pinned"] and result["server_cores"] == [0]
        assert result["server_threads_pinned"] > 0
        assert result["members"] == 398 and result["publishers"] == 199
        assert result["limits"]
        assert 1 <= len(result["steps"]) <= 2
        for step in result["steps"]:
            assert step["published"] > 0
            assert step["deliveries"] == step["expected_deliveries"] == step["published"] * 2
            assert (step["lost"], step["dups"], step["reorders"], step["order_violations"]) \
                == (0, 0, 0, 0)
            assert step["loadgen_core_share"] > 0 and step["server_core_share"] > 0
            assert step["cpu_us_per_delivery"] is not None
        assert "rate" in result["capacity"]
    for name in ("capacity_p99.png", "capacity_p99.svg"):
        assert (out / name).stat().st_size > 0
