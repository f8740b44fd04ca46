"""Dead and stalled peers: bounded inboxes, membership tied to live WS nodes, TS restarts."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
import redis

from tests.support.node_probes import publish, ts_stats, xlen
from tests.support.processes import Worker, start_topic_server, stop_all, write_cluster_file
from tests.support.waiting import wait_until
from topics.devtools.embedded_redis import RedisProcess, find_redis_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster_setup(tmp_path, redis_factory):
    urls = {n: redis_factory().url for n in ("ws-a", "ws-b", "ts-a")}
    cluster_file = write_cluster_file(tmp_path, urls)
    return urls, cluster_file


def subscribers(url: str, node: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return dict(client.pubsub_numsub(f"dps:inbox:{node}"))[f"dps:inbox:{node}".encode()]
    finally:
        client.close()


def largest_output_buffer(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return max(int(c["omem"]) for c in client.client_list())
    finally:
        client.close()


def test_stalled_ws_node_costs_its_redis_a_bounded_amount(cluster_setup):
    """A WS node that stops reading (SIGSTOP) costs its Redis at most the pubsub output limit
    (then Redis drops the subscriber) plus its backlog, capped at inbox_cap."""
    urls, cluster_file = cluster_setup
    stalled_redis = redis.Redis.from_url(urls["ws-b"])
    limit = 256 * 1024
    stalled_redis.config_set("client-output-buffer-limit", f"pubsub {limit} {limit} 0")
    stalled_redis.close()
    limits = json.dumps({"inbox_cap": 50, "node_timeout": 60, "stats_interval": 0.2})
    server = start_topic_server(cluster_file, "ts-a", DPS_LAYER=limits)
    stalled = Worker(cluster_file, "ws-b", "--groups", "room", "--expect", "1000",
                     DPS_LAYER=limits)
    try:
        stalled.read_event("ready")
        wait_until(lambda: subscribers(urls["ws-b"], "ws-b") == 1)
        os.kill(stalled.proc.pid, signal.SIGSTOP)  # alive, subscribed, no longer reading
        asyncio.run(publish(cluster_file, "room", 500, inbox_cap=50, padding="x" * 32768))
        # The owner has fanned every publish out to the stalled node (16 MB in all: more than
        # the kernel buffers between them hold) ...
        wait_until(lambda: (s := ts_stats(urls["ts-a"]))
                 and s["counters"].get("node_deliveries") == 500)
        # ... and what the stalled node costs its Redis is bounded either way: once its output
        # buffer passed the pubsub limit Redis dropped the subscriber, and from then on (or from
        # the start, if it stalled before trimming the backlog it had drained) the envelopes went
        # to the backlog, which kept only the newest 50. (node_deliveries counts envelopes handed
        # to the outbox, so the writes may still be finishing.)
        wait_until(lambda: xlen(urls["ws-b"], "ws-b") == 50)
        wait_until(lambda: ts_stats(urls["ts-a"])["counters"].get("backlogged", 0) >= 50)
        assert largest_output_buffer(urls["ws-b"]) < limit
    finally:
        os.kill(stalled.proc.pid, signal.SIGCONT)
        stalled.stop()
        stop_all([server])


def test_crashed_ws_node_loses_its_memberships_within_node_timeout(cluster_setup):
    urls, cluster_file = cluster_setup
    limits = json.dumps({"node_timeout": 1.5, "heartbeat_interval": 0.3, "stats_interval": 0.3})
    server = start_topic_server(cluster_file, "ts-a", DPS_LAYER=limits)
    crashing = Worker(cluster_file, "ws-b", "--members", "2", "--groups", "doomed",
                      DPS_LAYER=limits)
    try:
        crashing.read_event("ready")
        # Counts after the first member are sent with the next heartbeat, so wait for them.
        wait_until(lambda: (s := ts_stats(urls["ts-a"])) and s["group_count"] == 1
                 and s["groups"][0]["members"] == {"ws-b": 2})
        crashing.proc.kill()
        killed_at = time.monotonic()
        wait_until(lambda: (s := ts_stats(urls["ts-a"])) and s["group_count"] == 0, timeout=10)
        assert time.monotonic() - killed_at < 1.5 + 2.0  # node_timeout plus sweep/stats slack
        stats = ts_stats(urls["ts-a"])
        assert "ws-b" not in stats["ws_nodes"] and stats["counters"]["nodes_expired"] == 1
    finally:
        crashing.stop()
        stop_all([server])


def test_restarted_ws_node_replaces_its_old_memberships(cluster_setup):
    urls, cluster_file = cluster_setup
    limits = json.dumps({"node_timeout": 60, "stats_interval": 0.3})
    server = start_topic_server(cluster_file, "ts-a", DPS_LAYER=limits)
    first = Worker(cluster_file, "ws-b", "--members", "3", "--groups", "old", DPS_LAYER=limits)
    second = None
    try:
        first.read_event("ready")
        wait_until(lambda: (s := ts_stats(urls["ts-a"])) and s["group_count"] == 1)
        first.proc.kill()
        second = Worker(cluster_file, "ws-b", "--members", "1", "--groups", "new",
                        DPS_LAYER=limits)
        second.read_event("ready")
        stats = wait_until(lambda: (s := ts_stats(urls["ts-a"]))
                         and [g["group"] for g in s["groups"]] == ["new"] and s)
        assert stats["groups"][0]["members"] == {"ws-b": 1}
    finally:
        first.stop()
        if second:
            second.stop()
        stop_all([server])


def test_topic_server_restart_keeps_memberships_and_queued_messages(cluster_setup):
    urls, cluster_file = cluster_setup
    limits = json.dumps({"startup_sync_timeout": 3})
    server = start_topic_server(cluster_file, "ts-a", DPS_LAYER=limits)
    worker = Worker(cluster_file, "ws-a", "--members", "2", "--groups", "durable",
                    "--expect", "30", "--timeout", "8", DPS_LAYER=limits)
    try:
        worker.read_event("ready")
        worker.go()
        asyncio.run(publish(cluster_file, "durable", 10, start=0))
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0  # graceful
        # Queued on the owner's Redis while its process is down ...
        asyncio.run(publish(cluster_file, "durable", 10, start=10))
        assert xlen(urls["ts-a"], "ts-a") >= 10
        # ... and delivered once it is back, to members it learns about by resync alone.
        server = start_topic_server(cluster_file, "ts-a", DPS_LAYER=limits)
        asyncio.run(publish(cluster_file, "durable", 10, start=20))
        done = worker.read_event("done", timeout=30)
        assert done["complete"], done
        for per_group in done["received"].values():
            assert [seq for _, seq in per_group["durable"]] == list(range(30))
    finally:
        worker.stop()
        stop_all([server])


def test_topic_server_keeps_serving_across_a_restart_of_its_own_redis(tmp_path, redis_factory):
    """Its subscription breaks with the Redis; it subscribes again, takes what was published
    meanwhile from the backlog, and its members (held in its memory) still get everything."""
    urls = {n: redis_factory().url for n in ("ws-a", "ws-b")}
    ts_redis = redis_factory()
    urls["ts-a"] = ts_redis.url
    cluster_file = write_cluster_file(tmp_path, urls)
    limits = json.dumps({"node_timeout": 60})
    server = start_topic_server(cluster_file, "ts-a", DPS_LAYER=limits)
    worker = Worker(cluster_file, "ws-a", "--members", "2", "--groups", "steady",
                    "--expect", "20", "--timeout", "20", DPS_LAYER=limits)
    restarted = None
    try:
        worker.read_event("ready")
        worker.go()
        asyncio.run(publish(cluster_file, "steady", 10, start=0))
        ts_redis.stop()
        time.sleep(1.5)  # the fault's duration: the topic server notices, and keeps retrying
        restarted = RedisProcess(ts_redis.port, binary=find_redis_server()).start()
        asyncio.run(publish(cluster_file, "steady", 10, start=10))
        done = worker.read_event("done", timeout=30)
        assert done["complete"], done
        for per_group in done["received"].values():
            assert [seq for _, seq in per_group["steady"]] == list(range(20))
        assert server.poll() is None  # still serving
    finally:
        worker.stop()
        stop_all([server])
        if restarted is not None:
            restarted.stop()


def test_a_topic_server_paused_longer_than_node_timeout_drops_nobody(cluster_setup):
    """After a SIGSTOP longer than node_timeout, the WS nodes' heartbeats of that time are
    unread in its inbox: it must check again, not drop every membership on its stale clock."""
    urls, cluster_file = cluster_setup
    # (shorter than ts_failover_after: a longer pause costs the server its lease, see
    # test_failover.py)
    limits = json.dumps({"node_timeout": 3, "stats_interval": 0.2, "ts_failover_after": 10})
    server = start_topic_server(cluster_file, "ts-a", DPS_LAYER=limits)
    worker = Worker(cluster_file, "ws-a", "--groups", "paused", "--expect", "10",
                    "--timeout", "20", DPS_LAYER=limits)
    try:
        worker.read_event("ready")
        worker.go()
        os.kill(server.pid, signal.SIGSTOP)
        time.sleep(5)  # the fault under test: a pause longer than node_timeout
        os.kill(server.pid, signal.SIGCONT)
        stats = wait_until(lambda: (s := ts_stats(urls["ts-a"]))
                         and s["counters"].get("pauses_excused") and s)
        assert "nodes_expired" not in stats["counters"], stats["counters"]
        asyncio.run(publish(cluster_file, "paused", 10))
        done = worker.read_event("done", timeout=30)
        assert done["complete"], done
        [seqs] = [[seq for _, seq in g["paused"]] for g in done["received"].values()]
        assert seqs == list(range(10))
        assert "nodes_expired" not in ts_stats(urls["ts-a"])["counters"]
    finally:
        os.kill(server.pid, signal.SIGCONT)
        worker.stop()
        stop_all([server])
