"""The V2 binary frames (topics.protocol.v2_binary) against Phoenix's own serializer vectors
(phoenix/test/phoenix/socket/v2_json_serializer_test.exs) and the lengths a hostile client
can lie about."""
from __future__ import annotations

import pytest

from topics.protocol import Message, v2_binary

PUSH = bytes([0, 2, 3, 5, 5]) + b"12" + b"123" + b"topic" + b"event" + bytes([101, 102, 103])
REPLY = bytes([1, 2, 3, 5, 2]) + b"12" + b"123" + b"topic" + b"ok" + bytes([101, 102, 103])
BROADCAST = bytes([2, 5, 5]) + b"topic" + b"event" + bytes([101, 102, 103])


def test_push_vector_decodes():
    assert v2_binary.decode_push(PUSH) == Message("12", "123", "topic", "event", b"efg")


def test_push_vector_encodes():
    assert v2_binary.encode_push("12", "123", "topic", "event", b"efg") == PUSH


def test_reply_vector_encodes_and_decodes():
    assert v2_binary.encode_reply("12", "123", "topic", "ok", b"efg") == REPLY
    assert v2_binary.decode_reply(REPLY) == v2_binary.Reply("12", "123", "topic", "ok", b"efg")


def test_broadcast_vector_encodes_and_decodes():
    assert v2_binary.encode_broadcast("topic", "event", b"efg") == BROADCAST
    assert v2_binary.decode_broadcast(BROADCAST) == ("topic", "event", b"efg")


def test_empty_refs_are_null_as_phoenix_js_sends_them():
    frame = v2_binary.encode_push(None, None, "topic", "event", b"")
    assert frame == bytes([0, 0, 0, 5, 5]) + b"topicevent"
    assert v2_binary.decode_push(frame) == Message(None, None, "topic", "event", b"")


@pytest.mark.parametrize("frame", [
    b"\x00",
    bytes([0, 1, 1, 1]),              # header cut short
    bytes([0, 9, 9, 9, 9]) + b"ab",   # lengths past the end
    bytes([0, 255, 0, 0, 0]) + b"x" * 254,
])
def test_lengths_that_lie_are_refused(frame):
    with pytest.raises(v2_binary.InvalidBinaryFrame) as caught:
        v2_binary.decode_push(frame)
    assert not caught.value.invalid_utf8


def test_a_field_that_is_not_utf8_is_refused_as_such():
    with pytest.raises(v2_binary.InvalidBinaryFrame) as caught:
        v2_binary.decode_push(bytes([0, 0, 0, 1, 1]) + b"\xc3t")
    assert caught.value.invalid_utf8


@pytest.mark.parametrize("frame", [REPLY, BROADCAST])
def test_only_pushes_come_from_clients(frame):
    with pytest.raises(v2_binary.InvalidBinaryFrame):
        v2_binary.decode_push(frame)


def test_a_field_over_255_bytes_cannot_be_encoded():
    with pytest.raises(ValueError):
        v2_binary.encode_broadcast("topic", "é" * 128, b"")
