"""channel_layer.sequencing: the replay log, the servers' cursors, the receivers' filter."""
from __future__ import annotations

from collections import Counter

from channel_layer.liveness import down_servers, live_ring, ring_id
from channel_layer.sequencing import DeliveryFilter, OriginCursors, PublishLog
from channel_layer.transport import LEASE_UNKNOWN


def test_publishes_are_numbered_per_server_and_kept_until_acknowledged():
    log = PublishLog("ws-a/b1", limit=100, counters=Counter())
    assert [log.record("ts-a", "g", 1.0, b"x")[0] for _ in range(3)] == [1, 2, 3]
    assert log.record("ts-b", "h", 1.0, b"y") == (1, ["ws-a/b1", "ts-b", 1])
    log.acknowledged("ts-a", 2)
    assert [e.seq for e in log.take("ts-a")] == [3]
    assert log.pending("ts-a") == 0 and log.pending("ts-b") == 1


def test_a_resent_publish_keeps_its_first_identity_under_a_new_number():
    log = PublishLog("ws-a/b1", limit=100, counters=Counter())
    _, first = log.record("ts-a", "g", 1.0, b"x")
    [entry] = log.take("ts-a")
    seq, identity = log.record("ts-b", entry.group, entry.expires_at, entry.data, entry.identity)
    assert (seq, identity) == (1, first) and first == ["ws-a/b1", "ts-a", 1]


def test_a_failed_write_is_never_resent_and_the_log_is_bounded():
    counters = Counter()
    log = PublishLog("ws-a/b1", limit=2, counters=counters)
    for _ in range(3):
        log.record("ts-a", "g", 1.0, b"x")
    assert counters["unacked_overflow"] == 1
    log.forget("ts-a", 3)
    assert [e.seq for e in log.take("ts-a")] == [2]


def test_the_log_is_bounded_in_bytes_too():
    counters = Counter()
    log = PublishLog("ws-a/b1", limit=100, counters=counters, byte_limit=250)
    for _ in range(5):
        log.record("ts-a", "g", 1.0, b"x" * 100)
    assert [e.seq for e in log.take("ts-a")] == [4, 5] and counters["unacked_overflow"] == 3


def test_a_busy_origin_is_acknowledged_before_the_heartbeat():
    cursors = OriginCursors()
    for seq in range(1, 300):
        cursors.admit("o", seq)
    cursors.written(cursors.snapshot())
    assert cursors.acks_due(at_least=256) == [("o", 299)]
    cursors.admit("o", 300)
    cursors.written(cursors.snapshot())
    assert cursors.acks_due(at_least=256) == []  # one more: it waits for the heartbeat
    assert cursors.acks_due() == [("o", 300)]


def test_a_server_skips_copies_older_than_a_snapshot_and_acknowledges_what_is_written():
    cursors = OriginCursors()
    assert cursors.admit("o", 5) and cursors.admit("o", 6)
    cursors.restart_at("o", 10)  # the origin re-sends from 10 on
    assert not cursors.admit("o", 7)
    handled = cursors.snapshot()
    assert cursors.acks_due() == []  # nothing written yet
    cursors.written(handled)
    assert cursors.acks_due() == [("o", 9)]
    assert cursors.acks_due() == []  # said once
    assert cursors.admit("o", 10) and cursors.admit("o", 12)  # a gap: a write that failed


def test_the_filter_drops_what_it_has_seen_even_out_of_order():
    counters = Counter()
    seen = DeliveryFilter(counters, window=100)
    assert seen.first_time(["o", "ts-a", 5])
    assert seen.first_time(["o", "ts-a", 3])  # late, through another server: not a copy
    assert not seen.first_time(["o", "ts-a", 5])
    assert not seen.first_time(["o", "ts-a", 3])
    assert seen.first_time(["o", "ts-b", 5])  # another first server: another numbering
    assert seen.first_time(["o", "ts-a", 500])
    assert not seen.first_time(["o", "ts-a", 350])  # older than the window: taken as seen
    assert counters["duplicates_dropped"] == 3


def test_the_filter_keeps_a_fixed_window_however_many_it_sees():
    seen = DeliveryFilter(Counter(), window=10)
    for n in range(1, 1000, 3):  # a node sees only some of an origin's numbers
        assert seen.first_time(["o", "ts-a", n])
    assert not seen.first_time(["o", "ts-a", 997])
    assert seen.first_time(["o", "ts-a", 995])  # in the window, never seen
    highest, slots = seen._seen[("o", "ts-a")]
    assert highest == 997 and len(slots) == 10


def test_a_server_is_down_only_when_its_own_redis_says_so():
    configured = ["ts-a", "ts-b", "ts-c"]
    leases = {"ts-a": "boot1", "ts-b": None, "ts-c": LEASE_UNKNOWN}
    assert down_servers(configured, leases, set(), set()) == {"ts-b"}
    # An unreachable Redis keeps the last verdict.
    assert down_servers(configured, leases, {"ts-c"}, set()) == {"ts-b", "ts-c"}
    assert ring_id(live_ring(configured, {"ts-b"})) == "ts-a,ts-c"
    # All down: route to all of them (their backlogs hold what comes).
    assert ring_id(live_ring(configured, set(configured))) == "ts-a,ts-b,ts-c"


def test_an_unchanged_ring_is_kept_not_rebuilt():
    # Every node computes its ring every heartbeat: the same servers give back the same ring
    # object (its lookup cache intact); a change gives a new one.
    configured = ["ts-a", "ts-b", "ts-c"]
    current = live_ring(configured, {"ts-b"})
    assert current.owner_of("topics.x") in ("ts-a", "ts-c")
    assert live_ring(configured, {"ts-b"}, current) is current
    assert live_ring(list(reversed(configured)), {"ts-b"}, current) is current
    changed = live_ring(configured, set(), current)
    assert changed is not current and ring_id(changed) == "ts-a,ts-b,ts-c"
    # All down routes to all of them, which is the full ring too.
    full = live_ring(configured, set(configured), changed)
    assert full is changed
