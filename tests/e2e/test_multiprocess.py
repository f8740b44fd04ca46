"""Two topic-server processes and two WS-side layer processes, each node on its own Redis."""
from __future__ import annotations

import pytest

from channel_layer.ring import Ring
from tests.support.processes import Worker, start_topic_server, stop_all, write_cluster_file

pytestmark = pytest.mark.e2e


def groups_owned_by_each(ts_nodes: list[str], per_owner: int) -> list[str]:
    ring = Ring(ts_nodes)
    chosen: dict[str, list[str]] = {n: [] for n in ts_nodes}
    i = 0
    while any(len(v) < per_owner for v in chosen.values()):
        group = f"room{i}"
        owner = ring.owner_of(group)
        if len(chosen[owner]) < per_owner:
            chosen[owner].append(group)
        i += 1
    return [g for groups in chosen.values() for g in groups]


def test_every_member_gets_every_group_send_once_in_one_order(tmp_path, redis_factory):
    names = ["ws-a", "ws-b", "ts-a", "ts-b"]
    cluster_file = write_cluster_file(tmp_path, {n: redis_factory().url for n in names})
    groups = groups_owned_by_each(["ts-a", "ts-b"], per_owner=2)
    per_publisher = 40
    servers = [start_topic_server(cluster_file, ts) for ts in ("ts-a", "ts-b")]
    workers = [
        Worker(cluster_file, ws, "--members", str(members), "--groups", ",".join(groups),
               "--publish", str(per_publisher), "--expect", str(2 * per_publisher))
        for ws, members in (("ws-a", 3), ("ws-b", 2))
    ]
    try:
        for worker in workers:
            worker.read_event("ready")
        for worker in workers:  # both publish at once: the owners must still pick one order
            worker.go()
        results = [worker.read_event("done") for worker in workers]
    finally:
        for worker in workers:
            worker.stop()
        stop_all(servers)

    assert all(r["complete"] for r in results)
    members = {ch: per_group for r in results for ch, per_group in r["received"].items()}
    assert len(members) == 5
    expected = {(pub, seq) for pub in ("ws-a", "ws-b") for seq in range(per_publisher)}
    for group in groups:
        sequences = [[tuple(m) for m in per_group[group]] for per_group in members.values()]
        for sequence in sequences:
            assert len(sequence) == len(expected)          # nothing duplicated ...
            assert set(sequence) == expected               # ... nothing lost
            for pub in ("ws-a", "ws-b"):                   # each publisher's order kept
                assert [s for p, s in sequence if p == pub] == list(range(per_publisher))
        assert all(s == sequences[0] for s in sequences)   # one order for every member
