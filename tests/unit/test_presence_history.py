"""Presence and history at the owner, without I/O: the presence book's coalescing, the
topic server's join answers and recovery, the socket's join options, and ``topics.api`` on the
embedded cluster."""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest

from channel_layer import wire
from channel_layer.history import HistoryPatterns
from channel_layer.membership import Membership
from channel_layer.presence import DIFF_TYPE, STATE_TYPE, PresenceBook
from channel_layer.settings import LayerSettings
from channel_layer.topic_server import TopicServer
from tests.support.topic_server_input import HISTORY, ManualClock, feed, presence_owner
from topics.protocol import PhoenixSocket
from topics.protocol.serializers import SERIALIZERS
from topics.protocol.v2_json import VSN as V2
from topics.transport import presence_tracking as socket_presence


def book_with(*tracks: tuple[str, str, str]) -> PresenceBook:
    book = PresenceBook()
    for node, key, ref in tracks:
        book.track("g", node, key, ref, {"n": ref})
    return book


def payload(message: dict) -> dict:
    return json.loads(message["payload"])


# --- the presence book ----------------------------------------------------------------------

def test_changes_leave_as_one_diff_per_group_in_phoenix_format():
    book = book_with(("ws-a", "ada", "r1"), ("ws-b", "ada", "r2"), ("ws-b", "bob", "r3"))
    book.untrack("g", "r3")  # tracked and untracked within one window: nobody hears of it
    [(group, message)] = book.take_messages()
    assert group == "g" and message["type"] == DIFF_TYPE
    assert payload(message) == {"joins": {"ada": {"metas": [{"n": "r1", "phx_ref": "r1"},
                                                            {"n": "r2", "phx_ref": "r2"}]}},
                                "leaves": {}}
    assert book.take_messages() == []  # nothing new
    book.untrack("g", "r1")
    [(_, message)] = book.take_messages()
    assert payload(message) == {"joins": {}, "leaves": {"ada": {"metas": [
        {"n": "r1", "phx_ref": "r1"}]}}}


def test_a_new_member_starts_from_the_state_as_sent_and_the_pending_diff_follows():
    book = book_with(("ws-a", "ada", "r1"))
    book.take_messages()
    book.track("g", "ws-b", "bob", "r2", {})
    book.untrack("g", "r1")
    assert json.loads(book.state_json("g")) == {  # as sent
        "ada": {"metas": [{"n": "r1", "phx_ref": "r1"}]}}
    assert book.current("g") == {"bob": {"metas": [{"phx_ref": "r2"}]}}  # the truth now
    [(_, message)] = book.take_messages()
    assert payload(message)["joins"] == {"bob": {"metas": [{"phx_ref": "r2"}]}}
    assert payload(message)["leaves"] == {"ada": {"metas": [{"n": "r1", "phx_ref": "r1"}]}}


def test_an_update_replaces_its_entry_in_one_diff_with_phx_ref_prev_as_phoenix():
    book = book_with(("ws-a", "ada", "r1"), ("ws-b", "ada", "r2"))
    book.take_messages()
    old = ["ada", "r1", {"n": "r1", "online_at": 7}]
    key, ref, meta = socket_presence.updated(old, {"status": "away"})
    assert meta == {"online_at": 7, "status": "away", "phx_ref_prev": "r1"} and ref != "r1"
    book.track("g", "ws-a", key, ref, meta)
    [(_, message)] = book.take_messages()
    assert payload(message) == {
        "joins": {"ada": {"metas": [{"online_at": 7, "status": "away", "phx_ref_prev": "r1",
                                     "phx_ref": ref}]}},
        "leaves": {"ada": {"metas": [{"n": "r1", "phx_ref": "r1"}]}}}
    assert [m["phx_ref"] for m in book.current("g")["ada"]["metas"]] == ["r2", ref]
    # Only an entry of the same key held by the same node is replaced (r2 is ws-b's ada).
    book.track("g", "ws-a", "ada", "x1", {"phx_ref_prev": "r2"})
    book.track("g", "ws-b", "bob", "x2", {"phx_ref_prev": "r2"})
    assert [m["phx_ref"] for m in book.current("g")["ada"]["metas"]] == ["r2", ref, "x1"]


class RecordingOutbox:
    """An owner's outbox that records what is put in it (written at once)."""

    def __init__(self) -> None:
        self.sent: list[list] = []

    def put(self, envelope: bytes, ack: bool = False):
        self.sent.append(wire.decode(envelope))
        if ack:
            written = asyncio.get_running_loop().create_future()
            written.set_result(None)
            return written
        return None


async def test_a_member_updating_its_track_sends_no_untrack_before_the_join():
    """The update's JOIN replaces the track at the owner by itself: an UNTRACK ahead of it
    could leave in a diff of its own, and members would see the user go and come back."""
    outbox = RecordingOutbox()
    membership = Membership("ws-a", Counter(), lambda group: "ts-a", lambda node: outbox)
    channel = "specific.ws-a!one"

    async def join(track: list) -> None:
        before = len(outbox.sent)
        joining = asyncio.create_task(membership.add("g", channel, 5, {"presence": track}))
        while len(outbox.sent) == before or outbox.sent[-1][0] != wire.JOIN:
            await asyncio.sleep(0)  # one loop turn: the JOIN leaves on the next one
        [[_, _, token, _]] = outbox.sent[-1][3]
        membership.joined(token, {})
        await joining

    first = ["ada", "r1", {"online_at": 1}]
    await join(first)
    await join(socket_presence.updated(first, {"status": "away"}))
    assert [envelope[0] for envelope in outbox.sent] == [wire.JOIN, wire.JOIN]
    await join(["ada", "r3", {}])  # a plain rejoin: the old track leaves first
    assert [envelope[0] for envelope in outbox.sent] == [wire.JOIN] * 2 + [wire.UNTRACK, wire.JOIN]


def test_a_dead_node_takes_its_entries_and_snapshots_rebuild_the_state():
    book = book_with(("ws-a", "ada", "r1"), ("ws-b", "bob", "r2"))
    book.take_messages()
    book.drop_node("ws-b")
    [(_, message)] = book.take_messages()
    assert payload(message)["leaves"] == {"bob": {"metas": [{"n": "r2", "phx_ref": "r2"}]}}
    # A snapshot of a group the owner knows: the difference, as a diff.
    book.replace_node("ws-a", {"g": [["ada", "r1", {"n": "r1"}], ["cy", "r9", {}]]})
    [(_, message)] = book.take_messages()
    assert message["type"] == DIFF_TYPE and set(payload(message)["joins"]) == {"cy"}
    # A restarted owner learns the group from snapshots: its members get the whole state.
    fresh = PresenceBook()
    fresh.replace_node("ws-a", {"g": [["ada", "r1", {"n": "r1"}]]})
    fresh.replace_node("ws-b", {"g": [["cy", "r9", {}]]})
    [(_, message)] = fresh.take_messages()
    assert message["type"] == STATE_TYPE and set(payload(message)) == {"ada", "cy"}


# --- the owner ------------------------------------------------------------------------------


def joined_answers(ts: TopicServer, node: str = "ws-a") -> list:
    pending = ts.peers.outboxes[node]._pending
    return [wire.decode(e)[1] for e in pending if wire.decode(e)[0] == wire.JOINED]


async def test_a_join_storm_of_5000_costs_a_few_diffs_not_5000():
    """5,000 joins in JOIN envelopes of 50 (what one loop iteration of a WS node sends), 2 ms
    apart, the owner flushing after every envelope as its run loop does: diffs leave at most
    every ``presence_interval``, so the storm costs each member a handful of diffs."""
    manual = ManualClock()
    ts = presence_owner(manual.clock(), presence_interval=0.1)
    sent = []
    started = manual.now
    for batch in range(100):
        entries = [["lobby.storm", batch * 50 + i + 1, batch * 50 + i,
                    {"presence": [f"k{batch * 50 + i}", f"r{batch * 50 + i}", {}]}]
                   for i in range(50)]
        feed(ts, [wire.JOIN, "ws-a", "b1", entries])
        if ts.owner.presence_wait() <= 0:
            ts.owner.send_presence()
            sent.append(manual.now)
        manual.advance(0.002)  # the storm's pace
    while ts.presence.changed:
        manual.advance(max(0.0, ts.owner.presence_wait()))  # the owner's own wait
        ts.owner.send_presence()
        sent.append(manual.now)
    elapsed = manual.now - started
    assert ts.counters["presence_messages"] == len(sent) <= elapsed / 0.1 + 2
    assert len(sent) < 5000 / 50  # fewer diffs than even JOIN envelopes
    print(f"5,000 joins in {elapsed:.2f}s: {len(sent)} diffs, at most {len(sent) * 5000} "
          "frames to members")
    assert len(ts.presence.current("lobby.storm")) == 5000


async def test_join_answers_carry_position_and_recover_what_followed_it():
    ts = presence_owner()
    feed(ts, [wire.JOIN, "ws-a", "b1", [["rooms.x", 1, 1, {}]]])
    assert ts.owner.history_loads == {"rooms.x"}  # held until its history is read
    await ts.owner.release_held()
    [[answer]] = joined_answers(ts)
    token, response = answer
    epoch = response["history"]["position"]["epoch"]
    assert token == 1 and response["history"] == {
        "position": {"offset": 0, "epoch": epoch}, "recovered": False, "messages": []}
    for i in range(4):
        feed(ts, [wire.PUBLISH, "rooms.x", 10**10, f"m{i}".encode()])
    feed(ts, [wire.JOIN, "ws-a", "b1", [["rooms.x", 2, 2, {"recover": [1, epoch]}]]])
    feed(ts, [wire.JOIN, "ws-a", "b1", [["rooms.x", 3, 3, {"recover": [1, "other"]}]]])
    feed(ts, [wire.JOIN, "ws-a", "b1", [["rooms.x", 4, 4, {"recover": [9, epoch]}]]])
    recovered, wrong_epoch, ahead = (a[0][1]["history"] for a in joined_answers(ts)[1:])
    assert recovered["recovered"] is True
    assert recovered["messages"] == [[2, b"m1"], [3, b"m2"], [4, b"m3"]]
    assert recovered["position"]["offset"] == 4
    assert wrong_epoch["recovered"] is False and wrong_epoch["messages"] == []
    assert ahead["recovered"] is False


async def test_history_is_bounded_by_its_size_and_too_old_a_position_is_not_recovered():
    ts = presence_owner()
    await ts.history.load({"rooms.y"})
    for _ in range(8):
        feed(ts, [wire.PUBLISH, "rooms.y", 10**10, b"m"], now=time.time())
    history = ts.history.loaded("rooms.y")
    assert [o for o, _, _ in history.recent] == [4, 5, 6, 7, 8]
    assert not ts.history.since("rooms.y", 2, history.epoch, time.time()).recovered
    assert ts.history.since("rooms.y", 3, history.epoch, time.time()).recovered
    # Older than the ttl: gone, even within the size.
    assert not ts.history.since("rooms.y", 3, history.epoch, time.time() + 61).recovered


async def test_broadcasts_of_a_history_group_carry_their_position_to_ws_nodes():
    ts = presence_owner()
    await ts.history.load({"rooms.z"})
    feed(ts, [wire.MEMBER, "rooms.z", "ws-a", "b1", 1], [wire.PUBLISH, "rooms.z", 10**10, b"m"])
    delivery = wire.decode(ts.peers.outboxes["ws-a"]._pending[-1])
    assert delivery[:4] == [wire.GROUP_DELIVER, "rooms.z", 10**10, b"m"]
    assert delivery[4] == [1, ts.history.loaded("rooms.z").epoch]


def test_history_patterns_are_checked():
    with pytest.raises(ValueError, match="size"):
        HistoryPatterns({"rooms.*": {"size": 0, "ttl": 5}})
    with pytest.raises(ValueError):
        LayerSettings.from_config({"history": {"rooms.*": {"size": 5}}})
    assert HistoryPatterns(HISTORY).policy_of("rooms.a").size == 5
    assert HistoryPatterns(HISTORY).policy_of("topics.a") is None


# --- the socket side ------------------------------------------------------------------------

def test_recover_requests_are_validated():
    assert socket_presence.recover_request({"recover": {"offset": 3, "epoch": "e"}}) == [3, "e"]
    for bad in ({"recover": {"offset": -1, "epoch": "e"}}, {"recover": {"offset": True,
                "epoch": "e"}}, {"recover": {"offset": 1}}, {"recover": "x"}, [], None):
        assert socket_presence.recover_request(bad) is None


def test_an_anonymous_socket_is_tracked_under_its_own_key_with_a_clean_name():
    key = socket_presence.new_socket_key()
    tracked_key, ref, meta = socket_presence.track({}, key, {"name": " Ada\u0007\n "})
    assert tracked_key == key and key.startswith("anon-") and len(ref) == 16
    assert meta["name"] == "Ada" and isinstance(meta["online_at"], int)


def test_the_join_reply_carries_the_response_and_opted_in_broadcasts_their_position():
    socket = PhoenixSocket(SERIALIZERS[V2], routes=lambda topic: topic.startswith(("topics:", "rooms:")))
    [subscribe] = socket.handle_frame(json.dumps(["1", "1", "rooms:xy", "phx_join",
                                                  {"offsets": True}]))
    [reply] = socket.joined(subscribe, {"recovered": True}, offsets=True)
    assert json.loads(reply.text)[4] == {"status": "ok", "response": {"recovered": True}}
    frame = socket.render_broadcast("rooms:xy", "message", "{}", "ep:7")
    assert json.loads(frame) == ["1", "ep:7", "rooms:xy", "message", {}]
    plain = PhoenixSocket(SERIALIZERS[V2])
    [refused] = plain.handle_frame(json.dumps(["1", "1", "rooms:xy", "phx_join", {}]))
    assert json.loads(refused.text)[4]["response"] == {"reason": "unmatched topic"}


# --- topics.api on the embedded cluster -----------------------------------------------------

async def test_topics_api_reads_presence_and_history_from_the_owner(settings):
    from channels.layers import channel_layers

    from topics import api

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channel_layer.DPSChannelLayer",
                                           # its own runtime (one per node and prefix in a
                                           # process), so its topic server has this history
                                           "CONFIG": {"history": HISTORY, "prefix": "apitest"}}}
    channel_layers.backends.clear()
    try:
        layer = channel_layers["default"]
        channel = await layer.new_channel()
        await layer.group_join("rooms.api", channel, {"presence": ["ada", "r1", {}]})
        await layer.group_send("rooms.api", {"type": "phx.broadcast", "topic": "rooms:api",
                                             "event": "message", "payload": "{\"a\":1}"})
        assert await api.apresence("rooms:api") == {"ada": {"metas": [{"phx_ref": "r1"}]}}
        history = await api.ahistory("rooms:api", since=0)
        assert history["messages"] == [{"offset": 1, "event": "message", "payload": "{\"a\":1}"}]
        assert await api.ahistory("topics:nohistory") is None
        await layer.close()
    finally:
        channel_layers.backends.clear()
