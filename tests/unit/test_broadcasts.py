"""The broadcast frames a node builds once for all its members (topics.transport.broadcasts):
JSON tails for V1 and V2 members, and the base64 form a binary payload takes for V1."""
from __future__ import annotations

import base64
import json

from topics.protocol import v1_json, v2_binary, v2_json
from topics.transport.broadcasts import binary_frame, broadcast_message, encoded_tail, payload_json

TOPIC = "topics:matrix"
DATA = b"\x00\xff\x07 not utf-8 \xfe"


def frame(serializer, message: dict, join_ref: str = "7") -> object:
    """The whole frame a member of ``serializer`` gets: its join's prefix, then the shared tail."""
    prefix = serializer.broadcast_prefix(join_ref, TOPIC).encode()
    return json.loads(prefix + encoded_tail(message, serializer))


def test_a_binary_payload_reaches_a_v1_member_as_base64():
    message = broadcast_message(TOPIC, "blob", DATA)
    assert frame(v1_json, message) == {
        "join_ref": "7", "ref": None, "topic": TOPIC, "event": "blob",
        "payload": {"binary": base64.b64encode(DATA).decode()}}


def test_a_binary_payload_as_json_text_for_a_v2_json_frame():
    # A V2 member takes the binary frame; the JSON form is what a positioned or long-poll copy uses.
    message = broadcast_message(TOPIC, "blob", DATA)
    assert frame(v2_json, message) == ["7", None, TOPIC, "blob",
                                       {"binary": base64.b64encode(DATA).decode()}]
    assert v2_binary.decode_broadcast(binary_frame(message)) == (TOPIC, "blob", DATA)


def test_a_json_payload_is_the_published_text_unchanged():
    message = broadcast_message(TOPIC, "event", '{"message":"hi"}')
    assert payload_json(message) == '{"message":"hi"}'
    assert frame(v1_json, message)["payload"] == {"message": "hi"}
    assert frame(v2_json, message) == ["7", None, TOPIC, "event", {"message": "hi"}]


def test_each_serializers_tail_is_built_once_per_message():
    # The layer hands one message object to every member on a node: the second member reuses it.
    message = broadcast_message(TOPIC, "blob", DATA)
    first = encoded_tail(message, v1_json)
    assert encoded_tail(message, v1_json) is first
    assert payload_json(message) is payload_json(message)
    assert encoded_tail(message, v2_json) is not first
