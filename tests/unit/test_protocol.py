"""The pure Phoenix protocol (topics.protocol): every row of seed/NOTES.md, every quirk we do
not copy, both JSON serializers and every limit, without a server."""
from __future__ import annotations

import json

import pytest

from topics.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_DATA,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    INVALID_NAME,
    Close,
    PhoenixSocket,
    Publish,
    PublishBinary,
    SendFrame,
    Subscribe,
    Unsubscribe,
    encode_event,
    group_for_topic,
    is_valid_topic,
    serializer_for_query_string,
    v1_json,
    v2_json,
)
from topics.protocol.message import Message


class Wire:
    """One serializer seen as 5-tuples, so the same rule is checked on both wire formats."""

    def __init__(self, serializer):
        self.serializer = serializer

    def frame(self, join_ref, ref, topic, event, payload) -> str:
        if self.serializer is v2_json:
            return json.dumps([join_ref, ref, topic, event, payload])
        return json.dumps({"join_ref": join_ref, "ref": ref, "topic": topic, "event": event,
                           "payload": payload})

    def parse(self, text: str) -> list:
        value = json.loads(text)
        if self.serializer is v2_json:
            return value
        assert set(value) == {"join_ref", "ref", "topic", "event", "payload"}
        return [value["join_ref"], value["ref"], value["topic"], value["event"], value["payload"]]


class Client:
    """A fake adapter: executes the socket's actions the way the consumer does, recording them."""

    def __init__(self, wire: Wire, **limits):
        self.wire = wire
        self.socket = PhoenixSocket(wire.serializer, **limits)
        self.received: list[list] = []
        self.log: list = []  # every action, in execution order
        self.groups: set[str] = set()
        self.published: list[Publish] = []

    def send(self, join_ref, ref, topic, event, payload) -> list[list]:
        return self.send_raw(self.wire.frame(join_ref, ref, topic, event, payload))

    def send_raw(self, frame: str | bytes) -> list[list]:
        self.run(self.socket.handle_frame(frame))
        return self.take()

    def run(self, actions) -> None:
        for action in actions:
            self.log.append(action)
            if isinstance(action, SendFrame):
                self.received.append(self.wire.parse(action.text))
            elif isinstance(action, Subscribe):
                self.groups.add(action.group)
                self.run(self.socket.joined(action))
            elif isinstance(action, Unsubscribe):
                self.groups.discard(action.group)
            elif isinstance(action, (Publish, PublishBinary)):
                self.published.append(action)
                self.run(self.socket.published(action))

    def take(self) -> list[list]:
        out, self.received = self.received, []
        return out

    def deliver(self, publish: Publish) -> list | None:
        text = self.socket.render_broadcast(publish.topic, publish.event, publish.payload_json)
        return None if text is None else self.wire.parse(text)

    def closes(self) -> list[int]:
        return [a.code for a in self.log if isinstance(a, Close)]


OK = {"status": "ok", "response": {}}


def error(reason: str) -> dict:
    return {"status": "error", "response": {"reason": reason}}


@pytest.fixture(params=[v2_json, v1_json], ids=["v2", "v1"])
def wire(request) -> Wire:
    return Wire(request.param)


@pytest.fixture
def client(wire) -> Client:
    return Client(wire)


def joined_client(wire, topic="topics:matrix", join_ref="1", **limits) -> Client:
    client = Client(wire, **limits)
    assert client.send(join_ref, join_ref, topic, "phx_join", {})[0][4] == OK
    return client


# --- the rows of NOTES.md -----------------------------------------------------------------

def test_join_replies_ok_after_the_subscription(client):
    assert client.send("1", "1", "topics:matrix", "phx_join", {}) == [
        ["1", "1", "topics:matrix", "phx_reply", OK]]
    subscribe = next(i for i, a in enumerate(client.log) if isinstance(a, Subscribe))
    reply = next(i for i, a in enumerate(client.log) if isinstance(a, SendFrame))
    assert subscribe < reply
    assert client.groups == {"topics.matrix"}


def test_join_reply_is_only_emitted_by_joined(wire):
    socket = PhoenixSocket(wire.serializer)
    actions = socket.handle_frame(wire.frame("1", "1", "topics:matrix", "phx_join", {}))
    assert actions == [Subscribe("topics:matrix", "1", "1", {})]
    assert socket.topics == frozenset()
    reply = socket.joined(actions[0])
    assert [wire.parse(a.text) for a in reply] == [["1", "1", "topics:matrix", "phx_reply", OK]]
    assert socket.topics == {"topics:matrix"}


def test_publish_replies_ok_and_encodes_the_payload_once(wire):
    client = joined_client(wire)
    assert client.send("1", "2", "topics:matrix", "publish", ["event", {"message": "hi"}]) == [
        ["1", "2", "topics:matrix", "phx_reply", OK]]
    [publish] = client.published
    assert publish == Publish("topics:matrix", "event", '{"message":"hi"}', "1", "2")
    assert publish.group == "topics.matrix"
    publish_at = client.log.index(publish)
    assert isinstance(client.log[publish_at + 1], SendFrame)  # the reply follows the publish


@pytest.mark.parametrize("ref", ["2", 7, None, 'q"uo\\te\u00e9', "\x00ref\x00"])
def test_publish_ok_reply_from_the_join_template_is_the_frame_encode_would_give(wire, ref):
    client = joined_client(wire)
    for join_ref in ("1", "9"):  # a rejoin makes a new template (its own join_ref)
        if join_ref == "9":
            client.send("9", "9", "topics:matrix", "phx_join", {})
        client.socket.handle_frame(wire.frame(join_ref, ref, "topics:matrix", "publish",
                                              ["event", {}]))
        publish = Publish("topics:matrix", "event", "{}", join_ref, ref)
        for _ in range(2):  # the first reply builds the template, the second reuses it
            [reply] = client.socket.published(publish)
            assert reply.text == wire.serializer.encode(
                Message(join_ref, ref, "topics:matrix", "phx_reply", OK))


def test_publisher_receives_its_own_copy_with_its_join_ref(wire):
    client = joined_client(wire)
    client.send("1", "2", "topics:matrix", "publish", ["event", {"message": "hi"}])
    assert client.deliver(client.published[0]) == [
        "1", None, "topics:matrix", "event", {"message": "hi"}]


def test_two_members_each_render_their_own_join_ref(wire):
    alice = joined_client(wire, join_ref="1")
    bob = joined_client(wire, join_ref="7")
    alice.send("1", "2", "topics:matrix", "publish", ["event", {"message": "hi"}])
    [publish] = alice.published
    assert alice.deliver(publish) == ["1", None, "topics:matrix", "event", {"message": "hi"}]
    assert bob.deliver(publish) == ["7", None, "topics:matrix", "event", {"message": "hi"}]


def test_v2_broadcast_frame_is_the_exact_text():
    client = joined_client(Wire(v2_json))
    text = client.socket.render_broadcast("topics:matrix", "event", '{"message":"hi"}')
    assert text == '["1",null,"topics:matrix","event",{"message":"hi"}]'


def test_v1_broadcast_frame_is_the_exact_text():
    client = joined_client(Wire(v1_json))
    text = client.socket.render_broadcast("topics:matrix", "event", '{"message":"hi"}')
    assert text == ('{"join_ref":"1","ref":null,"topic":"topics:matrix",'
                    '"event":"event","payload":{"message":"hi"}}')


@pytest.mark.parametrize("event", ["event", 'quote"and\\slash', "ünïcode", "x" * 500])
def test_broadcast_encodes_any_event_name(wire, event):
    client = joined_client(wire)
    text = client.socket.render_broadcast("topics:matrix", event, "{}")
    assert wire.parse(text) == ["1", None, "topics:matrix", event, {}]


@pytest.mark.parametrize("event", ["event", "ünïcode"])
def test_a_frame_from_bytes_parts_is_the_rendered_frame(wire, event):
    """Direct writes assemble the frame from the join's prefix and a tail shared by all
    members: byte for byte what render_broadcast gives."""
    client = joined_client(wire, join_ref="ü7")
    payload = '{"message":"hé"}'
    tail = wire.serializer.broadcast_tail(encode_event(event), payload).encode()
    parts = client.socket.broadcast_prefix_bytes("topics:matrix") + tail
    assert parts == client.socket.render_broadcast("topics:matrix", event, payload).encode()
    assert client.socket.broadcast_prefix_bytes("topics:other") is None  # not joined
    client.socket.handle_disconnect()
    assert client.socket.broadcast_prefix_bytes("topics:matrix") is None


@pytest.mark.parametrize("topic", [
    "topics:s",
    "topics:" + "a" * 65,
    "topics:matrix%$#",
    "topics:matrix\n",       # ^...$ accepted this; a full match does not
    "topics:",
    "topics:ma trix",
    "topics:ÄÖ",             # letters, but not ASCII
    "topics:１２",            # digits, but not ASCII
])
def test_invalid_topic_names_are_refused_with_a_bare_string(client, topic):
    assert client.send("1", "1", topic, "phx_join", {}) == [
        ["1", "1", topic, "phx_reply", {"status": "error", "response": INVALID_NAME}]]
    assert client.groups == set()
    assert INVALID_NAME == ("invalid topic name, must be between 2 and 64 characters long and "
                            "only contain alphanumeric characters")


@pytest.mark.parametrize("topic", ["topics:ab", "topics:" + "a" * 64, "topics:Matrix42"])
def test_valid_topic_names_at_the_bounds_are_accepted(client, topic):
    assert client.send("1", "1", topic, "phx_join", {}) == [["1", "1", topic, "phx_reply", OK]]


@pytest.mark.parametrize("topic", ["room:x", "phoenix", "topicsmatrix"])
def test_join_outside_topics_namespace_is_unmatched_with_null_join_ref(client, topic):
    assert client.send("1", "3", topic, "phx_join", {}) == [
        [None, "3", topic, "phx_reply", error("unmatched topic")]]


@pytest.mark.parametrize("event, payload", [
    ("publish", ["event", {}]), ("custom", {}), ("heartbeat", {})])
def test_any_event_on_a_topic_not_joined_is_unmatched(client, event, payload):
    assert client.send("1", "4", "topics:matrix", event, payload) == [
        [None, "4", "topics:matrix", "phx_reply", error("unmatched topic")]]
    assert client.published == []


def test_heartbeat_is_answered_on_phoenix(client):
    assert client.send(None, "5", "phoenix", "heartbeat", {}) == [
        [None, "5", "phoenix", "phx_reply", OK]]


def test_leave_replies_ok_then_closes_the_join_and_unsubscribes_first(wire):
    client = joined_client(wire, join_ref="3")
    assert client.send("3", "9", "topics:matrix", "phx_leave", {}) == [
        ["3", "9", "topics:matrix", "phx_reply", OK],
        ["3", "3", "topics:matrix", "phx_close", {}],
    ]
    leave_actions = client.log[-3:]
    assert isinstance(leave_actions[0], Unsubscribe)
    assert client.groups == set()
    assert client.socket.topics == frozenset()


def test_nothing_is_rendered_after_leave(wire):
    client = joined_client(wire)
    client.send("1", "2", "topics:matrix", "publish", ["event", {}])
    client.send("1", "3", "topics:matrix", "phx_leave", {})
    assert client.deliver(client.published[0]) is None
    assert client.send("1", "4", "topics:matrix", "publish", ["event", {}]) == [
        [None, "4", "topics:matrix", "phx_reply", error("unmatched topic")]]


def test_leave_of_a_topic_not_joined_replies_ok(client):
    assert client.send("2", "2", "topics:other", "phx_leave", {}) == [
        ["2", "2", "topics:other", "phx_reply", OK]]
    assert not any(isinstance(a, Unsubscribe) for a in client.log)


def test_duplicate_join_replies_ok_then_closes_the_old_join(wire):
    client = joined_client(wire, join_ref="1")
    assert client.send("5", "5", "topics:matrix", "phx_join", {}) == [
        ["5", "5", "topics:matrix", "phx_reply", OK],
        ["1", "1", "topics:matrix", "phx_close", {}],
    ]
    assert client.socket.topics == {"topics:matrix"}
    assert client.groups == {"topics.matrix"}


def test_after_duplicate_join_broadcasts_carry_only_the_new_join_ref(wire):
    client = joined_client(wire, join_ref="1")
    client.send("5", "5", "topics:matrix", "phx_join", {})
    text = client.socket.render_broadcast("topics:matrix", "event", "{}")
    assert wire.parse(text)[0] == "5"


def test_duplicate_join_reusing_the_join_ref_still_closes_the_old_join(wire):
    client = joined_client(wire, join_ref="1")
    assert client.send("1", "2", "topics:matrix", "phx_join", {}) == [
        ["1", "2", "topics:matrix", "phx_reply", OK],
        ["1", "1", "topics:matrix", "phx_close", {}],
    ]


def test_messages_from_the_replaced_join_are_ignored_and_counted(wire):
    """Phoenix ignores a message to a join it has since replaced (the client raced the
    server's phx_close): no reply, and DPS counts it."""
    client = joined_client(wire, join_ref="1")
    client.send("5", "5", "topics:matrix", "phx_join", {})
    assert client.send("1", "6", "topics:matrix", "publish", ["e", {}]) == []
    assert client.socket.stale_messages == 1
    assert client.send("5", "7", "topics:matrix", "publish", ["e", {}]) == [
        ["5", "7", "topics:matrix", "phx_reply", OK]]


def test_a_message_to_a_topic_never_joined_is_unmatched(wire):
    client = joined_client(wire, join_ref="1")
    assert client.send("1", "6", "topics:other", "publish", ["e", {}]) == [
        [None, "6", "topics:other", "phx_reply", error("unmatched topic")]]
    assert client.socket.stale_messages == 0


def test_stale_leave_from_the_replaced_join_keeps_the_new_join(wire):
    client = joined_client(wire, join_ref="1")
    client.send("5", "5", "topics:matrix", "phx_join", {})
    assert client.send("1", "6", "topics:matrix", "phx_leave", {}) == []  # as in Phoenix
    assert client.socket.stale_messages == 1
    assert client.socket.topics == {"topics:matrix"}
    assert client.groups == {"topics.matrix"}


def test_null_join_ref_addresses_the_current_join(wire):
    client = joined_client(wire, join_ref="1")
    assert client.send(None, "2", "topics:matrix", "publish", ["e", {}]) == [
        ["1", "2", "topics:matrix", "phx_reply", OK]]


def test_integer_refs_are_echoed(wire):
    client = Client(wire)
    assert client.send(1, 2, "topics:matrix", "phx_join", {}) == [
        [1, 2, "topics:matrix", "phx_reply", OK]]
    assert wire.parse(client.socket.render_broadcast("topics:matrix", "e", "{}"))[0] == 1


# --- quirks of the original we do not copy ------------------------------------------------

@pytest.mark.parametrize("payload, reason", [
    ({"event": "x"}, "publish payload must be a 2-element array [event, payload]"),
    (["event"], "publish payload must be a 2-element array [event, payload]"),
    (["event", {}, "extra"], "publish payload must be a 2-element array [event, payload]"),
    ([1, {}], "event must be a non-empty string"),
    ([None, {}], "event must be a non-empty string"),
    (["", {}], "event must be a non-empty string"),
    (["phx_reply", {}], "event names starting with phx_ are reserved"),
    (["phx_close", {}], "event names starting with phx_ are reserved"),
    (["event", "text"], "payload must be a JSON object"),
    (["event", [1, 2]], "payload must be a JSON object"),
    (["event", None], "payload must be a JSON object"),
    (["event", 3], "payload must be a JSON object"),
])
def test_bad_publish_gets_an_error_reply_and_the_join_stays(wire, payload, reason):
    client = joined_client(wire)
    assert client.send("1", "2", "topics:matrix", "publish", payload) == [
        ["1", "2", "topics:matrix", "phx_reply", error(reason)]]
    assert client.published == []
    assert client.send("1", "3", "topics:matrix", "publish", ["ok", {}]) == [
        ["1", "3", "topics:matrix", "phx_reply", OK]]


def test_unknown_event_on_a_joined_topic_gets_an_error_reply(wire):
    client = joined_client(wire)
    assert client.send("1", "2", "topics:matrix", "shout", {}) == [
        ["1", "2", "topics:matrix", "phx_reply", error("unknown event")]]
    assert client.socket.topics == {"topics:matrix"}


def test_payload_with_a_lone_surrogate_is_encoded_as_ascii(wire):
    client = joined_client(wire)
    client.send_raw(wire.frame("1", "2", "topics:matrix", "publish", ["e", {"t": "\ud800é"}]))
    payload_json = client.published[0].payload_json
    assert payload_json.isascii()
    assert json.loads(payload_json) == {"t": "\ud800é"}


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" * 5000])
def test_a_number_no_client_can_read_gets_an_error_reply(wire, number):
    # 1e400 overflows Python's float to inf, which json.dumps would write as Infinity: a frame
    # every member's JSON.parse rejects. 5000 digits exceed Python's int conversion limit.
    client = joined_client(wire)
    text = wire.frame("1", "2", "topics:matrix", "publish", ["e", {"x": [1, 0, 3]}])
    text = text.replace("[1, 0, 3]", f"[1, {number}, 3]")
    assert client.send_raw(text) == [
        ["1", "2", "topics:matrix", "phx_reply", error("payload numbers must be finite")]]
    assert client.published == []
    assert client.socket.topics == {"topics:matrix"}


def test_a_lone_surrogate_event_gets_a_validation_reason(wire):
    client = joined_client(wire)
    assert client.send("1", "2", "topics:matrix", "publish", ["\ud800", {}]) == [
        ["1", "2", "topics:matrix", "phx_reply",
         error("event must be valid Unicode (it has a lone surrogate)")]]
    assert client.published == []


# --- malformed frames ---------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    "not json",
    "",
    '["1","1","topics:matrix","phx_join",{}',       # truncated
    '"a string"',
    "42",
    '[NaN, "1", "phoenix", "heartbeat", {}]',        # Python json accepts NaN; we do not
    "[" * 100_000 + "]" * 100_000,                   # would exhaust the parser's stack
])
def test_frame_that_is_not_json_closes_1003(client, frame):
    assert client.send_raw(frame) == []
    assert client.closes() == [CLOSE_UNSUPPORTED_DATA]


def test_v2_frame_that_is_an_object_closes_1003():
    client = Client(Wire(v2_json))
    client.send_raw('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}')
    assert client.closes() == [CLOSE_UNSUPPORTED_DATA]


@pytest.mark.parametrize("frame, reply", [
    ('["1","7","topics:matrix","phx_join"]',
     ["1", "7", "topics:matrix", "phx_reply",
      error("expected a JSON array [join_ref, ref, topic, event, payload]")]),
    ('[null,"7"]',
     [None, "7", "phoenix", "phx_reply",
      error("expected a JSON array [join_ref, ref, topic, event, payload]")]),
    ('[null,"7",42,"heartbeat",{}]',
     [None, "7", "phoenix", "phx_reply", error("topic and event must be strings")]),
    ('[null,"7","phoenix",null,{}]',
     [None, "7", "phoenix", "phx_reply", error("topic and event must be strings")]),
    ('[{},"7","phoenix","heartbeat",{}]',
     [None, "7", "phoenix", "phx_reply",
      error("join_ref and ref must be strings, integers or null")]),
])
def test_v2_malformed_frame_with_a_ref_gets_an_error_reply(frame, reply):
    client = Client(Wire(v2_json))
    assert client.send_raw(frame) == [reply]
    assert client.closes() == []


@pytest.mark.parametrize("frame", [
    '["1",null,"phoenix","heartbeat"]',    # ref null: nothing to address a reply to
    '["1",true,"phoenix","heartbeat",{}]',  # a bool is not a ref
    '["1"]',
    "[]",
])
def test_v2_malformed_frame_without_a_ref_closes_1003(frame):
    client = Client(Wire(v2_json))
    assert client.send_raw(frame) == []
    assert client.closes() == [CLOSE_UNSUPPORTED_DATA]


def test_v1_malformed_object_with_a_ref_gets_an_error_reply():
    client = Client(Wire(v1_json))
    reply = client.send_raw('{"topic":"phoenix","event":"heartbeat","ref":"9"}')
    assert reply == [[None, "9", "phoenix", "phx_reply", error(
        'expected a JSON object {"topic", "event", "payload", "ref"[, "join_ref"]}')]]


@pytest.mark.parametrize("frame", ['["1","1","phoenix","heartbeat",{}]', '{"topic":"phoenix"}'])
def test_v1_malformed_frame_without_a_ref_closes_1003(frame):
    client = Client(Wire(v1_json))
    assert client.send_raw(frame) == []
    assert client.closes() == [CLOSE_UNSUPPORTED_DATA]


def test_v1_frame_without_join_ref_is_accepted():
    client = Client(Wire(v1_json))
    assert client.send_raw('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}') == [
        [None, "1", "phoenix", "phx_reply", OK]]


def test_frames_after_a_close_are_ignored(client):
    client.send_raw("garbage")
    assert client.socket.closed
    heartbeat = client.wire.frame(None, "1", "phoenix", "heartbeat", {})
    assert client.socket.handle_frame(heartbeat) == []


def test_binary_frame_that_is_not_utf8_closes_1007(client):
    assert client.send_raw(b"\xff\xfe\x80") == []
    assert client.closes() == [CLOSE_INVALID_DATA]


def test_binary_frame_with_utf8_json_is_treated_as_text(client):
    frame = client.wire.frame("1", "1", "topics:matrix", "phx_join", {}).encode()
    assert client.send_raw(frame) == [["1", "1", "topics:matrix", "phx_reply", OK]]


def phoenix_binary_push(join_ref: str, ref: str, topic: str, event: str, data: bytes) -> bytes:
    fields = [s.encode() for s in (join_ref, ref, topic, event)]
    return bytes([0, *map(len, fields)]) + b"".join(fields) + data


def test_binary_push_is_refused_on_v1_and_the_join_stays():
    client = joined_client(Wire(v1_json))
    frame = phoenix_binary_push("1", "8", "topics:matrix", "blob", b"\xff\x00\x01")
    assert client.send_raw(frame) == [
        ["1", "8", "topics:matrix", "phx_reply", error("binary payloads need vsn=2.0.0")]]
    assert client.closes() == []
    assert client.socket.topics == {"topics:matrix"}


def test_binary_push_is_a_publish_of_its_event_with_its_bytes():
    client = joined_client(Wire(v2_json))
    frame = phoenix_binary_push("1", "8", "topics:matrix", "blob", b"\xff\x00\x01")
    assert client.send_raw(frame) == [["1", "8", "topics:matrix", "phx_reply", OK]]
    assert client.published == [
        PublishBinary("topics:matrix", "blob", b"\xff\x00\x01", "1", "8")]


@pytest.mark.parametrize("event, reason", [
    ("phx_join", "event names starting with phx_ are reserved"),
    ("", "event must be a non-empty string"),
])
def test_binary_push_follows_the_event_rules_of_publish(event, reason):
    client = joined_client(Wire(v2_json))
    frame = phoenix_binary_push("1", "8", "topics:matrix", event, b"x")
    assert client.send_raw(frame) == [["1", "8", "topics:matrix", "phx_reply", error(reason)]]
    assert client.published == []


def test_binary_push_to_a_topic_not_joined_is_unmatched():
    client = Client(Wire(v2_json))
    frame = phoenix_binary_push("1", "8", "topics:matrix", "blob", b"x")
    assert client.send_raw(frame) == [[None, "8", "topics:matrix", "phx_reply",
                                       error("unmatched topic")]]


def test_truncated_binary_push_header_is_not_utf8_json():
    client = Client(Wire(v2_json))
    client.send_raw(bytes([0, 9, 9, 9, 9]) + b"ab")
    assert client.closes() == [CLOSE_UNSUPPORTED_DATA]


@pytest.mark.parametrize("frame", [bytes([1, 0, 0, 0, 0]), bytes([2, 0, 0])],
                         ids=["reply", "broadcast"])
def test_a_client_sending_a_server_kind_is_closed_1003(frame):
    client = Client(Wire(v2_json))
    client.send_raw(frame)
    assert client.closes() == [CLOSE_UNSUPPORTED_DATA]


def test_binary_push_with_a_field_that_is_not_utf8_closes_1007():
    client = Client(Wire(v2_json))
    client.send_raw(bytes([0, 1, 1, 1, 1]) + b"1\xff" + b"tb")
    assert client.closes() == [CLOSE_INVALID_DATA]


# --- limits -------------------------------------------------------------------------------

def test_text_frame_over_the_byte_limit_closes_1009(wire):
    frame = wire.frame(None, "1", "phoenix", "heartbeat", {})
    at_limit = Client(wire, max_frame_bytes=len(frame))
    assert at_limit.send_raw(frame) == [[None, "1", "phoenix", "phx_reply", OK]]
    over = Client(wire, max_frame_bytes=len(frame) - 1)
    assert over.send_raw(frame) == []
    assert over.closes() == [CLOSE_TOO_BIG]


def test_byte_limit_counts_utf8_bytes_not_characters(wire):
    frame = json.dumps([None, "1", "phoenix", "heartbeat", {"t": "é" * 40}], ensure_ascii=False)
    if wire.serializer is v1_json:
        frame = json.dumps({"ref": "1", "topic": "phoenix", "event": "heartbeat",
                            "payload": {"t": "é" * 40}}, ensure_ascii=False)
    client = Client(wire, max_frame_bytes=len(frame) + 10)  # enough characters, too few bytes
    client.send_raw(frame)
    assert client.closes() == [CLOSE_TOO_BIG]


def test_binary_frame_over_the_byte_limit_closes_1009(wire):
    client = Client(wire, max_frame_bytes=4)
    client.send_raw(b"12345")
    assert client.closes() == [CLOSE_TOO_BIG]


def test_join_beyond_the_topic_limit_is_refused(wire):
    client = Client(wire, max_topics=2)
    client.send("1", "1", "topics:aa", "phx_join", {})
    client.send("2", "2", "topics:bb", "phx_join", {})
    assert client.send("3", "3", "topics:cc", "phx_join", {}) == [
        ["3", "3", "topics:cc", "phx_reply", error("too many topics")]]
    assert client.socket.topics == {"topics:aa", "topics:bb"}
    # Rejoining a topic already held does not count against the limit ...
    assert client.send("4", "4", "topics:aa", "phx_join", {})[0] == [
        "4", "4", "topics:aa", "phx_reply", OK]
    # ... and leaving frees a slot.
    client.send("2", "5", "topics:bb", "phx_leave", {})
    assert client.send("6", "6", "topics:cc", "phx_join", {}) == [
        ["6", "6", "topics:cc", "phx_reply", OK]]


# --- adapter reports, disconnect, idle ----------------------------------------------------

def test_subscribe_failure_refuses_the_join(wire):
    socket = PhoenixSocket(wire.serializer)
    [subscribe] = socket.handle_frame(wire.frame("1", "1", "topics:matrix", "phx_join", {}))
    [reply] = socket.subscribe_failed(subscribe, "join failed: ConnectionError")
    assert wire.parse(reply.text) == [
        "1", "1", "topics:matrix", "phx_reply", error("join failed: ConnectionError")]
    assert socket.topics == frozenset()


def test_a_failed_replacing_join_has_closed_the_old_join_too(wire):
    """Phoenix closes the old channel before it runs a duplicate join, so when the new join
    fails the client is joined to nothing, and was told so with phx_close."""
    client = joined_client(wire, join_ref="1")
    [subscribe] = client.socket.handle_frame(
        wire.frame("5", "5", "topics:matrix", "phx_join", {}))
    actions = client.socket.subscribe_failed(subscribe, "join failed: ConnectionError")
    assert actions[0] == Unsubscribe("topics:matrix")
    assert [wire.parse(a.text) for a in actions[1:]] == [
        ["1", "1", "topics:matrix", "phx_close", {}],
        ["5", "5", "topics:matrix", "phx_reply", error("join failed: ConnectionError")]]
    assert client.socket.topics == frozenset()


def test_a_crashed_channel_leaves_the_topic_and_sends_phx_error(wire):
    client = joined_client(wire, join_ref="3")
    actions = client.socket.handle_channel_crash("topics:matrix")
    assert actions[0] == Unsubscribe("topics:matrix")
    assert wire.parse(actions[1].text) == [
        "3", "3", "topics:matrix", "phx_error", {"reason": "channel_crash"}]
    assert client.socket.topics == frozenset()
    # Until the client rejoins, the topic is not joined; a second crash report is a no-op.
    assert client.socket.handle_channel_crash("topics:matrix") == []
    assert client.send("3", "4", "topics:matrix", "publish", ["e", {}]) == [
        [None, "4", "topics:matrix", "phx_reply", error("unmatched topic")]]


def test_a_v2_frame_with_more_than_five_elements_is_read_as_phoenix_reads_it():
    socket = PhoenixSocket(v2_json)
    [reply] = socket.handle_frame('[null,"1","phoenix","heartbeat",{},"extra",7]')
    assert json.loads(reply.text) == [None, "1", "phoenix", "phx_reply", OK]


def test_publish_failure_reports_the_reason_and_keeps_the_join(wire):
    client = joined_client(wire)
    [publish] = client.socket.handle_frame(
        wire.frame("1", "2", "topics:matrix", "publish", ["e", {}]))
    [reply] = client.socket.publish_failed(publish, "publish failed: ChannelFull")
    assert wire.parse(reply.text) == [
        "1", "2", "topics:matrix", "phx_reply", error("publish failed: ChannelFull")]
    assert client.socket.topics == {"topics:matrix"}


def test_disconnect_unsubscribes_every_topic_and_stops_rendering(wire):
    client = joined_client(wire)
    client.send("2", "2", "topics:other", "phx_join", {})
    actions = client.socket.handle_disconnect()
    assert set(actions) == {Unsubscribe("topics:matrix"), Unsubscribe("topics:other")}
    assert client.socket.render_broadcast("topics:matrix", "e", "{}") is None


def test_idle_timeout_closes_with_going_away_so_clients_reconnect(client):
    assert client.socket.handle_idle_timeout() == [Close(CLOSE_GOING_AWAY)]
    heartbeat = client.wire.frame(None, "1", "phoenix", "heartbeat", {})
    assert client.socket.handle_frame(heartbeat) == []


# --- topics, groups, versions ------------------------------------------------------------

def test_group_for_topic_replaces_the_colon():
    assert group_for_topic("topics:matrix") == "topics.matrix"
    assert Subscribe("topics:matrix", "1", "1").group == "topics.matrix"
    assert Unsubscribe("topics:matrix").group == "topics.matrix"


def test_is_valid_topic_is_a_full_ascii_match():
    assert is_valid_topic("topics:matrix")
    assert not is_valid_topic("topics:matrix\n")
    assert not is_valid_topic("xtopics:matrix")


@pytest.mark.parametrize("query, serializer", [
    (b"", v1_json),  # Phoenix: params["vsn"] || "1.0.0"
    (b"vsn=2.0.0", v2_json),
    (b"vsn=2.0.1", v2_json),  # ~> 2.0.0
    (b"vsn=2.0.17-rc.1%2Bbuild", v2_json),
    (b"vsn=1.0.3", v1_json),
    (b"vsn=2.1.0", None),
    (b"vsn=2.0.0-rc.1", None),  # a pre-release before 2.0.0
    (b"vsn=02.0.0", None),
    (b"vsn=2.0.0.0", None),
    (b"token=x&vsn=1.0.0", v1_json),
    ("vsn=2.0.0", v2_json),
    (b"vsn=3.0.0", None),
    (b"vsn=", None),
    (b"vsn=2.0", None),
    (b"vsn=2.0.0%0A", None),
])
def test_serializer_for_query_string(query, serializer):
    assert serializer_for_query_string(query) is serializer


def test_closing_leaves_every_topic_first():
    from topics.protocol import Unsubscribe
    from topics.protocol.serializers import SERIALIZERS

    socket = PhoenixSocket(SERIALIZERS["2.0.0"])
    for topic in ("topics:one", "topics:two"):
        (subscribe,) = socket.handle_frame(f'["1","1","{topic}","phx_join",{{}}]')
        socket.joined(subscribe)
    actions = socket.handle_frame(b"\xff\xfe not utf-8")
    assert actions == [Unsubscribe("topics:one"), Unsubscribe("topics:two"), Close(1007)]
    assert socket.topics == frozenset() and socket.handle_disconnect() == []


@pytest.mark.parametrize("frame, read_without_decoding", [
    ('[null,"17","phoenix","heartbeat",{}]', "17"),  # phoenix.js's own frame
    ('[null,"ab12","phoenix","heartbeat",{}]', "ab12"),
    ('[null,"a\\"b","phoenix","heartbeat",{}]', None),  # something to unescape: decoded
    ('[null, "17", "phoenix", "heartbeat", {}]', None),  # other spacing: decoded
    ('[null,"","phoenix","heartbeat",{}]', None),
    ('[null,17,"phoenix","heartbeat",{}]', None),  # an integer ref: decoded
])
def test_a_heartbeat_read_without_decoding_gets_the_reply_a_decoded_one_gets(
        frame, read_without_decoding):
    assert v2_json.heartbeat_ref(frame) == read_without_decoding
    decoded = v2_json.decode(frame)
    socket = PhoenixSocket(v2_json, routes=lambda topic: True)
    [reply] = socket.handle_heartbeat_frame(frame)
    assert json.loads(reply.text) == [None, decoded.ref, "phoenix", "phx_reply", OK]
    assert reply.text == v2_json.encode(Message(None, decoded.ref, "phoenix", "phx_reply", OK))


def test_v1_heartbeats_are_always_decoded():
    frame = json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "3"})
    assert v1_json.heartbeat_ref(frame) is None
    [reply] = PhoenixSocket(v1_json, routes=lambda topic: True).handle_heartbeat_frame(frame)
    assert json.loads(reply.text)["ref"] == "3"


def test_a_heartbeat_over_the_frame_limit_is_not_answered_in_the_read_callback():
    # Its ref is read without decoding, but the frame limit still applies: the usual path
    # closes the socket for it.
    frame = '[null,"' + "1" * 100 + '","phoenix","heartbeat",{}]'
    socket = PhoenixSocket(v2_json, max_frame_bytes=64)
    assert socket.handle_heartbeat_frame(frame) is None
    assert socket.handle_frame(frame) == [Close(CLOSE_TOO_BIG)]
