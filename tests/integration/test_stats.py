"""channel_layer.stats (snapshots, rate windows, topic tables on a real Redis) and the ring
drawing's geometry."""
from __future__ import annotations

import asyncio
import bisect
import itertools
import random

import pytest
import redis
import redis.asyncio as aioredis

from channel_layer import stats
from channel_layer.ring import HASH_SPACE, Ring
from channel_layer.topic_server import GroupState
from topics.operator.ring_drawing import HotTopic, owned_arcs, ring_drawing, shares


def test_a_rate_window_reports_per_second_rates_over_its_window():
    window = stats.RateWindow(window=10)
    assert window.add(0.0, {"publishes": 0}) == {"publishes": 0.0}
    assert window.add(5.0, {"publishes": 50}) == {"publishes": 10.0}
    window.add(20.0, {"publishes": 50})
    assert window.add(30.0, {"publishes": 50}) == {"publishes": 0.0}  # old samples left


def test_a_snapshot_must_be_an_object_with_the_schema_shapes():
    assert stats.decode_snapshot(stats.encode_snapshot({"node": "ts-a", "groups": []})) == {
        "node": "ts-a", "groups": []}
    assert stats.decode_snapshot(None) is None
    for bad in (b"[1]", b'{"groups": 3}', b'{"counters": []}', b"not json"):
        with pytest.raises(ValueError):
            stats.decode_snapshot(bad)


def test_the_topic_table_rewrites_only_what_changed():
    table = stats.TopicTable(bucket=2.0)
    groups = {"topics.a": GroupState({"ws-a": 1}), "topics.b": GroupState({"ws-b": 2})}
    first = table.collect(groups)
    assert first.reset and sorted(r.group for r in first.upserts) == ["topics.a", "topics.b"]
    assert table.collect(groups).upserts == []  # idle and unchanged: nothing to write
    groups["topics.a"].messages += 3
    groups["topics.b"].members["ws-a"] = 1
    groups["topics.c"] = GroupState({"ws-a": 1})
    assert table.collect(groups).upserts == []  # nobody said what changed
    for name in ("topics.a", "topics.b"):
        table.touch(name)
    batch = table.collect(groups)
    rows = {r.group: r for r in batch.upserts}
    assert set(rows) == {"topics.a", "topics.b"} and not batch.reset
    assert rows["topics.a"].history[-1] == 3 and len(rows["topics.a"].history) == table.slots
    assert rows["topics.a"].rate == 3 / stats.WINDOW_SECONDS
    assert rows["topics.b"].total_members == 3
    del groups["topics.b"]
    table.touch("topics.b")
    assert table.collect(groups).removed == ["topics.b"]


def test_a_rate_decays_to_zero_over_the_window_then_costs_no_write():
    table = stats.TopicTable(bucket=20.0)  # 3 slots
    groups = {"topics.a": GroupState({"ws-a": 1})}
    table.collect(groups)
    groups["topics.a"].messages = 6
    table.touch("topics.a")
    rates = [r.rate for r in table.collect(groups).upserts]
    for _ in range(3):
        rates += [r.rate for r in table.collect(groups).upserts]
    assert rates == [0.1, 0.1, 0.1, 0.0]
    assert table.collect(groups).upserts == []


def test_topic_tables_are_written_and_read_back_from_redis(redis_server):
    keys = stats.TopicKeys.of("dps", "ts-a")
    table = stats.TopicTable(bucket=2.0)
    rng = random.Random(1)
    groups = {f"topics.t{i}": GroupState({"ws-a": rng.randint(1, 9)}, messages=i)
              for i in range(2500)}
    groups["topics.star*"] = GroupState({"ws-a": 100})

    async def write(batch: stats.TopicBatch) -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        await stats.write_topic_batch(client, keys, batch, ttl=60)
        await client.aclose()

    asyncio.run(write(table.collect(groups)))
    client = redis.Redis.from_url(redis_server.url)
    total, top = stats.read_top(client, keys, "members", True, 3)
    assert total == 2501 and top[0] == ("topics.star*", 100.0)
    _, bottom = stats.read_top(client, keys, "members", False, 1)
    assert bottom[0][1] == min(sum(g.members.values()) for g in groups.values())
    found, cut = stats.read_matching(client, keys, "members", "t24", limit=111)
    assert sorted(g for g, _ in found) == sorted(g for g in groups if "t24" in g) and not cut
    assert stats.read_matching(client, keys, "members", "t", limit=10)[1] is True
    assert [g for g, _ in stats.read_matching(client, keys, "members", "*", 10)[0]] == [
        "topics.star*"]  # a glob character is matched literally
    rows = stats.read_rows(client, keys, ["topics.t7", "topics.gone"])
    assert list(rows) == ["topics.t7"] and rows["topics.t7"].messages == 7
    del groups["topics.t7"]
    table.touch("topics.t7")
    asyncio.run(write(table.collect(groups)))
    assert stats.read_rows(client, keys, ["topics.t7"]) == {}
    assert 0 < client.ttl(keys.members) <= 60
    client.close()


def test_the_ring_drawing_splits_the_circle_as_the_ring_does():
    ring = Ring(["ts-a", "ts-b", "ts-c"])
    arcs = owned_arcs(ring)
    share = shares(ring)
    assert abs(sum(share.values()) - 1.0) < 1e-12 and all(0.2 < s < 0.5 for s in share.values())
    spans = sorted((start, end, node) for node, mine in arcs.items() for start, end in mine)
    assert spans[0][0] == 0 and spans[-1][1] == HASH_SPACE
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # no gap, no overlap
    starts = [s for s, _, _ in spans]
    for i in range(500):
        group = f"topics.k{i}"
        position = ring.position_of(group)
        start, end, node = spans[bisect.bisect_right(starts, position) - 1]
        assert start <= position <= end
        if start < position < end:
            assert node == ring.owner_of(group)
    drawing = ring_drawing(ring, ["ts-b"], [HotTopic("topics:k1", "topics.k1", "ts-a", 2.0)])
    assert [g["node"] for g in drawing["groups"]] == ["ts-a", "ts-b", "ts-c"]
    assert [g["down"] for g in drawing["groups"]] == [False, True, False]
    assert len(drawing["markers"]) == 1 and drawing["markers"][0]["topic"] == "topics:k1"
