"""Topic-server failover: a server SIGKILLed and never restarted, or SIGSTOPped for 20 s.

Real processes: a Redis per node, two topic servers, two WS nodes under daphne, and on each WS
node a Phoenix client that is a member of all 20 topics and publishes to every one of them
throughout. Every publish answered ok must reach both clients exactly once, in its publisher's
order, and the dead server's topics must deliver again within ``ts_failover_after + 2`` s of
the fault, with no client rejoining.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from channel_layer.ring import Ring
from tests.support.node_probes import ts_stats
from tests.support.traffic_cluster import (
    FAILOVER_AFTER,
    TOPICS,
    Cluster,
    check_exactly_once_in_order,
    collect,
    owned_by,
    recovery_gap,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_a_topic_server_killed_for_good_fails_over_without_loss(tmp_path, redis_factory):
    cluster = Cluster(tmp_path, redis_factory)
    try:
        cluster.start()
        dead = owned_by(Ring(["ts-a", "ts-b"]), "ts-a")
        assert dead and len(dead) < len(TOPICS)
        clients = cluster.traffic(seconds=3 + FAILOVER_AFTER + 6)
        time.sleep(3)  # traffic flows before the fault
        cluster.procs["ts-a"].kill()
        fault_at = time.time()
        reports = collect(clients, tmp_path)
        assert "Traceback" not in cluster.log("ws-a") + cluster.log("ws-b")
    finally:
        cluster.stop()
    publishes = check_exactly_once_in_order(reports)
    gap = recovery_gap(reports, dead, fault_at)
    assert gap <= FAILOVER_AFTER + 2, f"its topics delivered again only after {gap:.2f}s"
    late = [p for p in publishes if p["sent"] > fault_at + FAILOVER_AFTER + 2]
    assert late and all(p["status"] == "ok" for p in late)
    print(f"SIGKILL failover: {len(publishes)} publishes, all delivered once; the dead "
          f"server's topics delivered again {gap:.2f}s after the kill")


def test_a_topic_server_paused_20s_fails_over_and_rejoins_without_duplicates(tmp_path,
                                                                            redis_factory):
    cluster = Cluster(tmp_path, redis_factory)
    try:
        cluster.start()
        paused_topics = owned_by(Ring(["ts-a", "ts-b"]), "ts-a")
        clients = cluster.traffic(seconds=3 + 20 + 6)
        time.sleep(3)  # the scenario's timeline: traffic flows before the fault
        paused = cluster.procs["ts-a"]
        before = wait_until(lambda: ts_stats(cluster.urls["ts-a"], "ts-a"))
        os.kill(paused.pid, signal.SIGSTOP)
        fault_at = time.time()
        time.sleep(20)  # the fault under test
        os.kill(paused.pid, signal.SIGCONT)
        woke_at = time.time()
        # It rejoins as a new boot and its topics move back to it, without a client rejoining.
        rejoined = wait_until(lambda: (s := ts_stats(cluster.urls["ts-a"], "ts-a"))
                            and s["boot"] != before["boot"]
                            and {f"topics.{t}" for t in paused_topics}
                            <= {g["group"] for g in s["groups"]} and s, timeout=15)
        reports = collect(clients, tmp_path)
        assert paused.poll() is None, "the paused server died"
    finally:
        cluster.stop()
    log = cluster.log("ts-a")
    assert "lost its lease" in log and "Traceback" not in log, log
    publishes = check_exactly_once_in_order(reports)
    gap = recovery_gap(reports, paused_topics, fault_at)
    assert gap <= FAILOVER_AFTER + 2, f"its topics delivered again only after {gap:.2f}s"
    # After the SIGCONT it serves its topics again (they moved back to it).
    after = [p for p in publishes if p["sent"] > woke_at + 3]
    assert after and all(p["status"] == "ok" for p in after)
    assert rejoined["counters"].get("lease_lapses") == 1
    print(f"SIGSTOP 20 s: {len(publishes)} publishes, all delivered once; its topics "
          f"delivered again {gap:.2f}s after the pause began; it had them back "
          f"{rejoined['updated'] - woke_at:.2f}s after the SIGCONT")
