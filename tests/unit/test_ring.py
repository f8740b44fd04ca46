"""The ring: one owner per group, the same on every node, a new value per membership."""
from __future__ import annotations

from collections import Counter

from channel_layer.ring import Ring


def test_every_node_computes_the_same_owner():
    a, b = Ring(["ts-a", "ts-b", "ts-c"]), Ring(["ts-c", "ts-a", "ts-b"])
    for i in range(500):
        assert a.owner_of(f"topics.t{i}") == b.owner_of(f"topics.t{i}")


def test_the_key_is_the_full_group_name():
    ring = Ring(["ts-a", "ts-b"])
    owners = {ring.owner_of(f"topics.t{i}") for i in range(50)}
    assert owners == {"ts-a", "ts-b"}


def test_load_is_spread():
    ring = Ring([f"ts-{c}" for c in "abcd"])
    counts = Counter(ring.owner_of(f"topics.t{i}") for i in range(4000))
    assert min(counts.values()) > 600  # consistent hashing with virtual nodes, roughly even


def test_lookups_are_cached_and_a_change_makes_a_new_ring():
    ring = Ring(["ts-a", "ts-b"])
    ring.owner_of("topics.x")
    ring.owner_of("topics.x")
    assert ring.owner_of.cache_info().hits == 1
    grown = ring.with_nodes(["ts-a", "ts-b", "ts-c"])
    assert grown is not ring and ring.nodes == ("ts-a", "ts-b")
    assert grown.owner_of.cache_info().currsize == 0


def test_adding_a_node_moves_only_a_share_of_the_groups():
    before, after = Ring(["ts-a", "ts-b", "ts-c"]), Ring(["ts-a", "ts-b", "ts-c", "ts-d"])
    groups = [f"topics.t{i}" for i in range(2000)]
    moved = [g for g in groups if before.owner_of(g) != after.owner_of(g)]
    assert all(after.owner_of(g) == "ts-d" for g in moved)  # nothing shuffles between old nodes
    assert len(moved) < len(groups) * 0.4
