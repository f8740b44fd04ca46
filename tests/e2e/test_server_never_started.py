"""A topic server listed in the cluster file whose process never starts costs nothing.

Real processes: a Redis per node, two topic servers, two WS nodes under daphne, and on each WS
node a Phoenix client that is a member of all 20 topics and publishes to every one of them
throughout. The operator adds ``ts-c`` to every node's cluster file, but its process exits at
start (its ``--metrics-port`` is taken); its Redis answers. Its share of the ring must stay
with the servers that run: every publish answered ok reaches both clients exactly once. Once
``ts-c`` does start, its lease appears and it takes its share, still losing nothing.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from channel_layer.ring import Ring
from tests.support.node_probes import ts_stats
from tests.support.processes import ROOT, node_env
from tests.support.traffic_cluster import Cluster, check_exactly_once_in_order, collect, owned_by
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

ALL_THREE = ["ts-a", "ts-b", "ts-c"]


def start_failing_topic_server(cluster: Cluster) -> int:
    """``ts-c`` with its metrics port taken: it exits at start, before it takes a lease.
    Returns its exit status."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "topic_server", "--metrics-port", str(port)],
            env=node_env(cluster.write_file("ts-c", ALL_THREE), "ts-c",
                         DPS_LAYER=cluster.settings),
            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "cannot serve metrics" in proc.stderr, proc.stderr
    return proc.returncode


def test_a_listed_server_that_never_starts_loses_no_publish(tmp_path, redis_factory):
    cluster = Cluster(tmp_path, redis_factory, spare_ts=("ts-c",))
    moved = owned_by(Ring(ALL_THREE), "ts-c")
    assert moved  # the topics the ring of three would give ts-c
    try:
        cluster.start()
        clients = cluster.traffic(seconds=12)
        time.sleep(2)  # traffic flows before the edit
        assert start_failing_topic_server(cluster) != 0
        for node in ("ws-a", "ws-b", "ts-a", "ts-b"):  # the operator lists it everywhere
            cluster.write_file(node, ALL_THREE)
        reports = collect(clients, tmp_path)
        publishes = check_exactly_once_in_order(reports, all_ok=True)
        assert {p["topic"] for p in publishes} >= {f"topics:{t}" for t in moved}

        # Once it does start, its lease appears and it takes its share of the ring.
        clients = cluster.traffic(seconds=8)
        time.sleep(1)  # traffic flows before it starts
        cluster.start_ts("ts-c", ALL_THREE)
        wait_until(lambda: (s := ts_stats(cluster.urls["ts-c"], "ts-c"))
                   and s["group_count"] == len(moved), timeout=15,
                   what="ts-c serves the topics the ring of three gives it")
        (tmp_path / "after").mkdir()
        after_start = collect(clients, tmp_path / "after")
    finally:
        cluster.stop()
    later = check_exactly_once_in_order(after_start, all_ok=True)
    for node in ("ws-a", "ws-b", "ts-a", "ts-b", "ts-c"):
        assert "Traceback" not in cluster.log(node), cluster.log(node)
    print(f"a listed server that never started: {len(publishes)} publishes, each delivered "
          f"once; after it started, {len(later)} more ({len(moved)} topics moved to it)")
