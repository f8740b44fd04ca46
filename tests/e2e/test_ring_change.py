"""Adding a topic server at runtime: nodes follow the edited cluster file, members keep receiving."""
from __future__ import annotations

import asyncio
import json

import pytest

from channel_layer.ring import Ring
from tests.support.node_probes import publish, ts_stats
from tests.support.processes import Worker, start_topic_server, stop_all, write_cluster_file
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_adding_a_topic_server_moves_groups_without_rejoining(tmp_path, redis_factory):
    urls = {n: redis_factory().url for n in ("ws-a", "ts-a", "ts-b")}
    cluster_file = write_cluster_file(tmp_path, {n: urls[n] for n in ("ws-a", "ts-a")})
    groups = [f"moving{i}" for i in range(12)]
    moved = [g for g in groups if Ring(["ts-a", "ts-b"]).owner_of(g) == "ts-b"]
    assert moved  # the new server takes over some of them
    limits = json.dumps({"heartbeat_interval": 0.2, "stats_interval": 0.2})
    servers = [start_topic_server(cluster_file, "ts-a", DPS_LAYER=limits)]
    worker = Worker(cluster_file, "ws-a", "--members", "2", "--groups", ",".join(groups),
                    "--expect", "2", DPS_LAYER=limits)
    try:
        worker.read_event("ready")
        worker.go()
        for group in groups:
            asyncio.run(publish(cluster_file, group, 1, start=0))

        write_cluster_file(tmp_path, urls)  # the operator adds ts-b ...
        servers.append(start_topic_server(cluster_file, "ts-b", DPS_LAYER=limits))
        # ... and the WS node hands ts-b the memberships of the groups it now owns.
        wait_until(lambda: (s := ts_stats(urls["ts-b"], "ts-b"))
                 and s["group_count"] == len(moved))
        # ... and unregisters them at ts-a (checked while the worker still runs: once it is
        # done it leaves, and ts-a forgets it altogether).
        stats_a = wait_until(lambda: (s := ts_stats(urls["ts-a"], "ts-a"))
                           and s["group_count"] == len(groups) - len(moved) and s)
        assert {g["group"] for g in stats_a["groups"]} == set(groups) - set(moved)
        for group in groups:
            asyncio.run(publish(cluster_file, group, 1, start=1))

        done = worker.read_event("done", timeout=30)
        assert done["complete"], done
        for per_group in done["received"].values():
            for group in groups:
                assert [seq for _, seq in per_group[group]] == [0, 1]
    finally:
        worker.stop()
        stop_all(servers)


def test_a_removed_topic_server_drains_and_exits_0(tmp_path, redis_factory):
    urls = {n: redis_factory().url for n in ("ws-a", "ts-a", "ts-b")}
    cluster_file = write_cluster_file(tmp_path, urls)
    groups = [f"leaving{i}" for i in range(12)]
    moved = [g for g in groups if Ring(["ts-a", "ts-b"]).owner_of(g) == "ts-b"]
    assert moved
    limits = json.dumps({"heartbeat_interval": 0.2, "stats_interval": 0.2})
    servers = [start_topic_server(cluster_file, name, DPS_LAYER=limits)
               for name in ("ts-a", "ts-b")]
    worker = Worker(cluster_file, "ws-a", "--groups", ",".join(groups), "--expect", "1",
                    DPS_LAYER=limits)
    try:
        worker.read_event("ready")
        worker.go()
        write_cluster_file(tmp_path, {n: urls[n] for n in ("ws-a", "ts-a")})  # ts-b goes
        removed = servers[1]
        assert removed.wait(15) == 0  # drained, stopped cleanly: no SIGTERM needed
        log = removed.stdout.read()
        assert "no longer in the cluster file; draining" in log and "drained" in log, log
        assert "could not publish stats" not in log and "Traceback" not in log, log
        # Its groups are served by ts-a now, without the member rejoining.
        wait_until(lambda: (s := ts_stats(urls["ts-a"], "ts-a")) and s["group_count"] == 12)
        for group in groups:
            asyncio.run(publish(cluster_file, group, 1))
        done = worker.read_event("done", timeout=30)
        assert done["complete"], done
    finally:
        worker.stop()
        stop_all(servers)
