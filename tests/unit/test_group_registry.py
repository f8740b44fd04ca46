"""The topic server's group registry (``channel_layer.topic_server.registry``): pure rules,
driven with explicit times."""
from __future__ import annotations

from channel_layer.topic_server.registry import GroupRegistry


def registry_with_log() -> tuple[GroupRegistry, list]:
    log: list = []
    registry = GroupRegistry(touched=lambda g: log.append(("touched", g)),
                             node_left=lambda n, g: log.append(("left", n, g)))
    return registry, log


def test_a_group_lives_while_a_node_has_members_or_a_plain_channel_is_in_it():
    registry, log = registry_with_log()
    registry.set_count("g", "ws-a", 2, now=10.0)
    registry.plain_join("g", "worker", 10.0, 5, now=10.0)
    assert registry.groups["g"].members == {"ws-a": 2} and registry.groups["g"].created == 10.0
    registry.set_count("g", "ws-a", 0, now=11.0)
    assert "g" in registry.groups and ("left", "ws-a", "g") in log
    registry.plain_leave("g", "worker")
    assert "g" not in registry.groups
    assert log.count(("touched", "g")) == 2  # each count change rewrites the group's row


def test_a_new_node_is_reported_and_a_new_boot_replaces_the_old_ones_memberships():
    registry, _ = registry_with_log()
    first = registry.see("ws-a", "b1", 1.0)
    assert first.new and first.replaced_boot is None and not first.state.synced
    registry.set_count("g", "ws-a", 3, 1.0)
    again = registry.see("ws-a", "b1", 2.0)
    assert not again.new and again.state.last_seen == 2.0 and "g" in registry.groups
    restarted = registry.see("ws-a", "b2", 3.0)
    assert restarted.replaced_boot == "b1" and restarted.state.synced
    assert "g" not in registry.groups


def test_a_snapshot_replaces_only_the_groups_it_covers():
    registry, _ = registry_with_log()
    for group in ("mine", "gone", "theirs"):
        registry.set_count(group, "ws-a", 1, 1.0)
    registry.groups["mine"].messages = 7
    registry.apply_snapshot("ws-a", {"mine": 4, "new": 1}, covers=lambda g: g != "theirs",
                            now=2.0)
    assert registry.groups["mine"].members == {"ws-a": 4}
    assert registry.groups["mine"].messages == 7  # the state of a group that stays
    assert "gone" not in registry.groups
    assert "theirs" in registry.groups  # another server's under the sender's ring: kept
    assert registry.groups["new"].created == 2.0


def test_silent_nodes_expire_and_a_pause_is_excused_from_now():
    registry, _ = registry_with_log()
    registry.see("ws-a", "b1", 0.0)
    registry.see("ws-b", "b1", 4.0)
    registry.set_count("g", "ws-a", 1, 0.0)
    assert registry.expire_silent_nodes(now=5.0, node_timeout=5.0) == []  # not over it
    registry.excuse(now=9.0)  # this server did not run: every silence counts from now
    assert registry.expire_silent_nodes(now=13.0, node_timeout=5.0) == []
    expired = registry.expire_silent_nodes(now=14.5, node_timeout=5.0)
    assert [node for node, _ in expired] == ["ws-a", "ws-b"]
    assert expired[0][1] == 5.5
    assert registry.groups == {} and registry.ws_nodes == {}


def test_bye_forgets_only_the_current_boot():
    registry, _ = registry_with_log()
    registry.see("ws-a", "b2", 1.0)
    registry.set_count("g", "ws-a", 1, 1.0)
    assert not registry.bye("ws-a", "b1") and "g" in registry.groups
    assert registry.bye("ws-a", "b2") and "g" not in registry.groups


def test_plain_memberships_expire_and_move_to_their_new_owner():
    registry, _ = registry_with_log()
    registry.plain_join("old", "w1", 1.0, 5, now=1.0)
    registry.plain_join("kept", "w2", 50.0, 5, now=50.0)
    registry.plain_join("moved", "w3", 50.0, 9, now=50.0)
    assert registry.expire_plain_members(now=90.0, group_expiry=60.0) == 1
    assert "old" not in registry.groups
    taken = registry.take_plain_members(keep=lambda g: g == "kept")
    assert taken == [("moved", "w3", 50.0, 9)] and "moved" not in registry.groups
    assert registry.drop_groups(keep=lambda g: False) == ["kept"] and not registry.groups


def test_all_synced_needs_every_listed_node_under_the_ring():
    registry, _ = registry_with_log()
    assert not registry.all_synced(["ws-a"], "ts-a")  # never heard from
    state = registry.see("ws-a", "b1", 1.0).state
    assert not registry.all_synced(["ws-a"], "ts-a")
    state.synced, state.ring = True, "ts-a,ts-b"
    assert not registry.all_synced(["ws-a"], "ts-a")
    state.ring = "ts-a"
    assert registry.all_synced(["ws-a"], "ts-a")
    assert registry.member_count() == 0
