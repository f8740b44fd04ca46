"""Ring changes lose nothing when nodes notice them at different times.

Every node reads its own copy of the cluster file, and the test edits the copies one after the
other: the first WS node, then the topic servers 0.5 s later, then the other WS node 1.5 s
after the first (``2 × heartbeat_interval`` is 2 s). Both WS nodes' clients are members of all
20 topics and publish to all of them throughout; every publish answered ok must reach both
exactly once, in its publisher's order.
"""
from __future__ import annotations

import json
import time

import pytest

from channel_layer.ring import Ring
from tests.support.traffic_cluster import (
    TOPICS,
    Cluster,
    check_exactly_once_in_order,
    collect,
    owned_by,
)

pytestmark = pytest.mark.e2e

# The defaults that matter here: heartbeat_interval 1 s, ring_settle_time 3 s.
SETTINGS = json.dumps({"heartbeat_interval": 1.0, "stats_interval": 1.0})
SKEW = 1.5
ALL_THREE = ["ts-a", "ts-b", "ts-c"]  # seconds between the first WS node's notice and the second's


def edit_with_skew(cluster: Cluster, ts: list[str], servers: list[str]) -> float:
    """Write the new ring into each node's file, the WS nodes SKEW apart; when it began."""
    began = time.time()
    cluster.write_file("ws-a", ts)
    time.sleep(0.5)  # the skew under test
    for server in servers:
        cluster.write_file(server, ts)
    time.sleep(SKEW - 0.5)  # the rest of the skew under test
    cluster.write_file("ws-b", ts)
    return began


def test_adding_a_topic_server_noticed_1_5s_apart_loses_nothing(tmp_path, redis_factory):
    cluster = Cluster(tmp_path, redis_factory, spare_ts=("ts-c",), settings=SETTINGS)
    moved = owned_by(Ring(ALL_THREE), "ts-c")
    assert moved
    try:
        cluster.start()
        clients = cluster.traffic(seconds=13)
        time.sleep(3)  # the scenario's timeline: 3 s of traffic before the change
        cluster.start_ts("ts-c", ALL_THREE)
        # As an operator does: start it, then edit the cluster file (here: after its start-up
        # wait for snapshots has passed, so only the ring rules hold the publishes back).
        time.sleep(3)  # outlasts ts-c's startup_sync_timeout: nothing to observe it by
        edit_with_skew(cluster, ALL_THREE, ["ts-a", "ts-b"])
        reports = collect(clients, tmp_path)
    finally:
        cluster.stop()
    publishes = check_exactly_once_in_order(reports, all_ok=True)
    assert "ring is now ['ts-a', 'ts-b', 'ts-c']" in cluster.log("ts-a")
    print(f"ring add, WS nodes {SKEW}s apart: {len(publishes)} publishes, each delivered once "
          f"to both clients ({len(moved)} of {len(TOPICS)} topics moved)")


def test_removing_a_topic_server_noticed_1_5s_apart_loses_nothing(tmp_path, redis_factory):
    cluster = Cluster(tmp_path, redis_factory, ts=("ts-a", "ts-b", "ts-c"), settings=SETTINGS)
    moved = owned_by(Ring(ALL_THREE), "ts-c")
    assert moved
    try:
        cluster.start()
        clients = cluster.traffic(seconds=11)
        time.sleep(3)  # the scenario's timeline: 3 s of traffic before the change
        edit_with_skew(cluster, ["ts-a", "ts-b"], ALL_THREE)
        removed = cluster.procs["ts-c"]
        assert removed.wait(20) == 0  # drained, then stopped cleanly on its own
        reports = collect(clients, tmp_path)
    finally:
        cluster.stop()
    publishes = check_exactly_once_in_order(reports, all_ok=True)
    log = cluster.log("ts-c")
    assert "draining" in log and "drained" in log and "Traceback" not in log, log
    print(f"ring remove, WS nodes {SKEW}s apart: {len(publishes)} publishes, each delivered "
          f"once to both clients; the removed server exited 0")
