"""The ring rule of ``channel_layer.liveness``: up, down, not started, unknown."""
from __future__ import annotations

from channel_layer.liveness import down_servers, live_ring, not_started, ring_id, with_leases_seen
from channel_layer.transport import LEASE_NEVER_HELD, LEASE_UNKNOWN

CONFIGURED = ["ts-a", "ts-b", "ts-c"]


def test_a_listed_server_that_never_held_a_lease_is_kept_out_of_the_ring():
    leases = {"ts-a": "boot1", "ts-b": "boot2", "ts-c": LEASE_NEVER_HELD}
    assert not_started(CONFIGURED, leases, set()) == {"ts-c"}
    down = down_servers(CONFIGURED, leases, set(), set())
    assert down == {"ts-c"}
    assert ring_id(live_ring(CONFIGURED, down)) == "ts-a,ts-b"


def test_a_server_joins_the_ring_when_its_lease_appears():
    seen = with_leases_seen(set(), {"ts-a": "boot1", "ts-c": LEASE_NEVER_HELD})
    down = down_servers(CONFIGURED, {"ts-a": "boot1", "ts-b": "b", "ts-c": LEASE_NEVER_HELD},
                        set(), seen)
    leases = {"ts-a": "boot1", "ts-b": "b", "ts-c": "boot3"}
    assert down_servers(CONFIGURED, leases, down, seen) == set()
    assert with_leases_seen(seen, leases) == {"ts-a", "ts-b", "ts-c"}


def test_a_server_seen_leased_whose_redis_lost_its_keys_stays_as_it_was():
    # Its Redis restarted without persistence (or its keys went): that proves nothing, until
    # the server renews (up again) or not.
    leases = {"ts-a": "boot1", "ts-b": "boot2", "ts-c": LEASE_NEVER_HELD}
    assert not_started(CONFIGURED, leases, {"ts-c"}) == set()
    assert down_servers(CONFIGURED, leases, set(), {"ts-c"}) == set()
    assert down_servers(CONFIGURED, leases, {"ts-c"}, {"ts-c"}) == {"ts-c"}


def test_a_lapsed_lease_is_down_whatever_was_seen_and_an_unknown_keeps_the_verdict():
    leases = {"ts-a": None, "ts-b": LEASE_UNKNOWN, "ts-c": LEASE_UNKNOWN}
    assert down_servers(CONFIGURED, leases, {"ts-b"}, set(CONFIGURED)) == {"ts-a", "ts-b"}
    assert not_started(CONFIGURED, leases, set()) == set()  # unreachable is not "not started"


def test_when_no_server_has_started_the_ring_is_all_of_them():
    leases = dict.fromkeys(CONFIGURED, LEASE_NEVER_HELD)
    down = down_servers(CONFIGURED, leases, set(), set())
    assert down == set(CONFIGURED)
    assert ring_id(live_ring(CONFIGURED, down)) == "ts-a,ts-b,ts-c"


async def test_the_ring_follower_reports_joins_and_lapses_once():
    from channel_layer.cluster import parse_cluster
    from channel_layer.memory_transport import MemoryTransport
    from channel_layer.ring_follower import RingFollower, gains

    cluster = parse_cluster({"nodes": [
        {"name": name, "role": name[:2], "redis": f"redis://h:{port}/0"}
        for port, name in enumerate(["ws-a", *CONFIGURED], start=1)]}, "test")
    transport = MemoryTransport()
    for node in ("ts-a", "ts-b"):
        await transport.renew_lease(node, f"boot-{node}", 60_000)
    follower = RingFollower(cluster)
    first = await follower.follow(transport, cluster)
    assert ring_id(first.new) == "ts-a,ts-b" and not first.went_down  # ts-c not started
    assert await follower.follow(transport, cluster) is None  # nothing changed
    await transport.renew_lease("ts-c", "boot-c", 60_000)
    joined = await follower.follow(transport, cluster)
    assert follower.ring_id == "ts-a,ts-b,ts-c" and not joined.went_down
    await transport.drop_lease("ts-b", "boot-ts-b")
    lapsed = await follower.follow(transport, cluster)
    assert lapsed.went_down == {"ts-b"} and follower.ring_id == "ts-a,ts-c"
    # A server judges the others, not itself: its own lease is not read.
    itself = RingFollower(cluster)
    assert await itself.follow(transport, cluster, skip="ts-b") is None  # its first ring: all
    assert itself.ring_id == "ts-a,ts-b,ts-c"
    assert gains("ts-a", ["ts-a", "ts-b"], ["ts-a"])
    assert not gains("ts-a", ["ts-a"], ["ts-a", "ts-b"])
    assert follower.ring_named("ts-a,ts-b").nodes == ("ts-a", "ts-b")
    assert follower.ring_named(None) is follower.ring
