"""Named envelopes (``channel_layer.wire``): what an older or newer peer sends decodes, bad
input is a decoding error, and a handler's bug is counted and logged as a bug."""
from __future__ import annotations

import logging
from collections import Counter

import pytest

from channel_layer import wire
from channel_layer.clock import Clock


def test_an_older_peer_s_envelope_gets_the_defaults_of_the_fields_it_does_not_send():
    # A SYNC from before presence, rings and publish numbers: counts only.
    sync = wire.Sync.decode([wire.SYNC, "ws-a", "b1", "ts-a", {"g": 2}])
    assert sync.counts == {"g": 2} and dict(sync.presence) == {}
    assert sync.ring is None and sync.first_seq == 0 and sync.previous_ring is None
    joined = wire.Joined.decode([wire.JOINED, [1, 2]])
    assert joined.answers == [1, 2] and dict(joined.states) == {}
    delivery = wire.GroupDeliver.decode([wire.GROUP_DELIVER, "g", 1.0, b"m"])
    assert delivery.position is None and delivery.identity is None


def test_a_newer_peer_s_extra_fields_are_ignored():
    hello = wire.Hello.decode([wire.HELLO, "ws-a", "b1", "a field of a later version"])
    assert hello == wire.Hello("ws-a", "b1")


def test_a_publish_says_whether_it_is_numbered_or_forwarded():
    unnumbered = wire.Publish.decode([wire.PUBLISH, "g", 1.0, b"m"])
    assert not unnumbered.numbered and not unnumbered.forwarded
    numbered = wire.Publish.decode([wire.PUBLISH, "g", 1.0, b"m", "ws-a:b1", 7, None])
    assert numbered.numbered and numbered.seq == 7 and not numbered.forwarded
    forwarded = wire.Publish.decode([wire.PUBLISH, "g", 1.0, b"m", None, None, ["o", "ts-a", 7]])
    assert forwarded.forwarded and forwarded.identity == ["o", "ts-a", 7]


@pytest.mark.parametrize("envelope", [
    [wire.PUBLISH, "g"],  # too short
    [wire.MEMBER, "g", "ws-a", "b1", "three"],  # a count that is not a number
    [wire.SYNC, "ws-a", "b1", "ts-a", ["not", "a", "map"]],
    [wire.ACK, "ts-a", "b", "origin", None],
])
def test_bad_fields_are_a_decoding_error(envelope):
    with pytest.raises(wire.MalformedEnvelope):
        wire.ENVELOPES[envelope[0]].decode(envelope)


def test_every_kind_has_one_named_type():
    kinds = {value for name, value in vars(wire).items() if name.isupper()
             and isinstance(value, int) and 0 < value < 100}
    assert set(wire.ENVELOPES) == kinds
    assert all(kind.KIND == number for number, kind in wire.ENVELOPES.items())


def test_a_handler_gets_the_named_envelope_and_bad_input_is_counted_as_malformed():
    got, counters = [], Counter()
    handlers = {wire.HELLO: lambda hello, now: got.append((hello.ws_node, now))}
    wire.dispatch(wire.encode([wire.HELLO, "ws-a", "b1"]), handlers, counters, 5.0)
    wire.dispatch(wire.encode([wire.HELLO, "ws-a"]), handlers, counters, 5.0)
    wire.dispatch(wire.encode([wire.BYE, "ws-a", "b1"]), handlers, counters, 5.0)
    assert got == [("ws-a", 5.0)]
    assert counters == {"malformed_envelopes": 1, "unknown_envelopes": 1}


def test_a_handler_s_bug_is_counted_apart_and_logged_with_its_traceback_once_a_while(
        monkeypatch, caplog):
    now = [0.0]
    monkeypatch.setattr(wire, "handler_bugs",
                        wire.BugReports(interval=60.0, clock=Clock(monotonic=lambda: now[0])))

    def buggy(hello: wire.Hello, now: float) -> None:
        raise KeyError("a bug in the handler")

    counters = Counter()
    hello = wire.encode([wire.HELLO, "ws-a", "b1"])
    with caplog.at_level(logging.ERROR, logger="channel_layer.wire"):
        for _ in range(3):
            wire.dispatch(hello, {wire.HELLO: buggy}, counters, 1.0)
        now[0] = 61.0
        wire.dispatch(hello, {wire.HELLO: buggy}, counters, 1.0)
    assert counters == {"envelope_handler_errors": 4}  # not malformed_envelopes
    reports = [r for r in caplog.records if r.name == "channel_layer.wire"]
    assert len(reports) == 2  # the first, then one after the interval
    assert reports[0].exc_info and "KeyError" in caplog.text and "Hello" in reports[0].message
    assert "2 more since the last report" in reports[1].message
