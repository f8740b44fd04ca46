"""Hypothesis strategies for hostile Phoenix frames, and the answer each one must get.

A batch is what one connection sends: frames that never close the socket (every one has a ref
the server can answer on), then at most one frame that must close it. Hypothesis generates a
pool of each kind; crossovers of pool frames make the thousands a live node gets. The expected answers come
from :class:`Expectation`, which feeds the same frames to the pure protocol (topics.protocol,
the README's protocol table as code) plus the two rules the servers apply before the app:
a text frame that is not UTF-8 closes 1007, a frame over the server's size limit closes 1009.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from topics.protocol import CLOSE_INVALID_DATA, CLOSE_TOO_BIG, PhoenixSocket, v2_binary, v2_json
from topics.protocol.actions import Close, Publish, PublishBinary, SendFrame, Subscribe, Unsubscribe
from topics.transport.broadcasts import binary_frame, broadcast_message

TEXT, BINARY = 0x1, 0x2
# Topic names carry TAG, which each connection replaces (same length, so binary headers stay
# true) with its own number: nothing published by one connection reaches another.
TAG = b"ZZZZ"
HOME = "topics:fuzzZZZZhome"  # every connection joins it first; fuzzed frames only publish to it

# --- JSON values ---------------------------------------------------------------------------

_strings = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "é✓𝄞", "phx_join", "publish", ""]),
)
_numbers = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _strings)
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_strings, inner, max_size=4)),
    max_leaves=12,
)
_refs = st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 10 ** 20))
_topics = st.one_of(
    st.just(HOME),
    st.builds(lambda n: f"topics:fuzzZZZZn{n}", st.integers(0, 30)),
    st.sampled_from(["topics:", "topics:x", "room:lobby", "phoenix", "topics:\ud800",
                     "topics:" + "a" * 65, "topics:ab\n"]),
    st.text(max_size=10),
)
_events = st.one_of(st.sampled_from(["phx_join", "phx_leave", "publish", "heartbeat", "blob",
                                     "phx_reply"]), _strings)


def _encode(value: object, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    # Python writes an overflowed float as Infinity: put back the number a client would send.
    text = text.replace("-Infinity", "-1e400").replace("Infinity", "1e400")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only its \\u escape is valid UTF-8
        return _encode(value, True)


# --- frames that get a reply ----------------------------------------------------------------

def _publish_payload(draw: st.DrawFn) -> object:
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return [draw(_events), draw(st.dictionaries(_strings, json_values, max_size=4))]
    if shape == 1:
        return [draw(json_values), draw(json_values)]  # wrong types at both positions
    if shape == 2:
        return draw(json_values)
    if shape == 3:  # nesting deep enough to matter, shallow enough to parse
        depth = draw(st.integers(50, 600))
        return ["deep", {"n": json.loads("[" * depth + "]" * depth)}]
    if shape == 4:  # numbers that overflow a float (written as 1e400)
        return ["big", {"x": [1, draw(st.sampled_from([float("inf"), float("-inf")])), 3]}]
    return ["e", {"k": draw(json_values)}]


@st.composite
def answered_text(draw: st.DrawFn) -> bytes:
    """A text frame whose ref is readable: it gets a reply whatever else is wrong with it."""
    ref = draw(st.text(min_size=1, max_size=6))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        frame = [draw(st.sampled_from([None, "home"])), ref, HOME, "publish",
                 _publish_payload(draw)]
    elif kind == 1:
        frame = [draw(_refs), ref, draw(_topics), draw(_events), draw(json_values)]
    elif kind == 2:
        frame = [draw(_refs), ref, draw(_topics), draw(st.sampled_from(["phx_join", "phx_leave"])),
                 draw(st.one_of(st.just({}), json_values))]
    else:
        frame = [draw(_refs), ref, "phoenix", "heartbeat", draw(json_values)]
    position = draw(st.integers(0, 9))
    if position in (0, 2, 3, 4):  # a wrong type at one position (the ref stays readable)
        frame[position] = draw(json_values)
    if frame[2] == HOME and frame[3] in ("phx_join", "phx_leave"):
        frame[3] = "publish"  # HOME's join stays as it is, so its broadcasts are exact
    return _encode(frame, draw(st.booleans()))


@st.composite
def answered_binary(draw: st.DrawFn) -> bytes:
    """A well-formed binary push: a publish, or a reply saying why not."""
    topic = draw(st.one_of(st.just(HOME), _topics))
    event = draw(st.sampled_from(["blob", "blob", "phx_x", "", "é", "heartbeat"]))
    try:
        if len(topic.encode()) > v2_binary.MAX_FIELD_BYTES:
            topic = HOME
    except UnicodeEncodeError:  # no UTF-8 for a lone surrogate: phoenix.js could not send it
        topic = HOME
    return v2_binary.encode_push(draw(st.sampled_from(["home", "", "9"])),
                                 draw(st.text("0123456789", min_size=1, max_size=4)),
                                 topic, event, draw(st.binary(max_size=300)))


# --- frames that close the socket -----------------------------------------------------------

CLOSING_KINDS = 13


@st.composite
def closing_frame(draw: st.DrawFn, max_frame_bytes: int, server_limit: int,
                  kind: int | None = None) -> tuple[int, bytes]:
    """A frame that must close the socket (``kind`` picks which sort; drawn when None)."""
    valid = _encode([None, "1", "phoenix", "heartbeat", {"k": draw(json_values)}], True)
    if kind is None:
        kind = draw(st.integers(0, CLOSING_KINDS - 1))
    if kind == 0:  # truncated
        return TEXT, valid[:draw(st.integers(0, len(valid) - 1))]
    if kind == 1:  # garbled: bytes replaced, then kept only if still UTF-8
        at = draw(st.integers(0, len(valid) - 1))
        garbled = valid[:at] + draw(st.binary(min_size=1, max_size=4)) + valid[at + 1:]
        return TEXT, garbled
    if kind == 2:  # a ref that cannot be read
        return TEXT, _encode([None, draw(st.one_of(st.floats(), st.lists(st.integers()),
                                                   st.booleans())), "phoenix", "heartbeat",
                              {}], True)
    if kind == 3:
        return TEXT, draw(st.sampled_from([b'[NaN,"1","phoenix","heartbeat",{}]',
                                           b'[null,"1","phoenix","heartbeat",{"x":Infinity}]',
                                           b"", b"42", b'"s"', b"{}", b"[1,2]", b"null"]))
    if kind == 4:  # nesting past any parser's stack
        depth = draw(st.integers(5000, 50000))
        return TEXT, b"[" * depth + b"]" * depth
    if kind == 5:  # invalid UTF-8 in a text frame
        at = draw(st.integers(0, len(valid)))
        return TEXT, valid[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + valid[at:]
    if kind == 6:  # over the socket's limit, under the server's
        return TEXT, b'[null,"1","phoenix","heartbeat",{"p":"' + b"x" * max_frame_bytes + b'"}]'
    if kind == 7:  # over the server's limit
        return draw(st.sampled_from([TEXT, BINARY])), b"[" + b" " * server_limit
    if kind == 8:  # binary headers whose lengths lie
        sizes = draw(st.lists(st.integers(0, 255), min_size=0, max_size=4))
        body = draw(st.binary(max_size=40))
        frame = bytes([0, *sizes]) + body
        return BINARY, frame
    if kind == 9:  # kinds only the server sends
        return BINARY, draw(st.sampled_from([
            v2_binary.encode_reply("1", "1", "t", "ok", b"x"),
            v2_binary.encode_broadcast("t", "e", b"x"), bytes([1]), bytes([2, 200])]))
    if kind == 10:  # a push whose field is not UTF-8
        return BINARY, bytes([0, 1, 1, 1, 1]) + b"1\xff" + b"tb"
    if kind == 11:  # binary that is not UTF-8 JSON
        return BINARY, b"\xff" + draw(st.binary(max_size=20))
    return TEXT, draw(st.binary(max_size=30)).replace(b"[", b"x")


def collect(strategy: st.SearchStrategy, count: int) -> list:
    """``count`` examples of ``strategy``, the same on every run (hypothesis, derandomized)."""
    examples: list = []

    @settings(max_examples=count, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def gather(example: object) -> None:
        examples.append(example)

    gather()
    return examples


@dataclass
class FramePool:
    """Generated frames, and the mutations that turn a few hundred into tens of thousands:
    hypothesis spends milliseconds per example, a crossover of two examples microseconds."""

    texts: list[bytes]
    binaries: list[bytes]
    closing: list[list[tuple[int, bytes]]]  # by kind

    @classmethod
    def generate(cls, max_frame_bytes: int, server_limit: int, size: int = 400) -> FramePool:
        return cls(collect(answered_text(), size), collect(answered_binary(), size // 2),
                   [collect(closing_frame(max_frame_bytes, server_limit, kind), 12)
                    for kind in range(CLOSING_KINDS)])

    def answered(self, rng: random.Random) -> tuple[int, bytes]:
        """A frame that gets a reply: a generated one, or a crossover of two."""
        if rng.random() < 0.25:
            return BINARY, self._cross_binary(rng)
        if rng.random() < 0.3:
            return TEXT, rng.choice(self.texts)
        return TEXT, self._cross_text(rng)

    def _cross_text(self, rng: random.Random) -> bytes:
        first, second = (json.loads(rng.choice(self.texts)) for _ in range(2))
        # The ref always from the first parent (readable); every other field from either.
        frame = [a if i == 1 else rng.choice((a, b))
                 for i, (a, b) in enumerate(zip(first, second, strict=True))]
        if frame[2] == HOME and frame[3] in ("phx_join", "phx_leave"):
            frame[3] = "publish"
        return _encode(frame, rng.random() < 0.5)

    def _cross_binary(self, rng: random.Random) -> bytes:
        first, second = (v2_binary.decode_push(rng.choice(self.binaries)) for _ in range(2))
        return v2_binary.encode_push(first.join_ref, first.ref, rng.choice((first, second)).topic,
                                     rng.choice((first, second)).event,
                                     rng.choice((first, second)).payload)

    def batch(self, rng: random.Random, size: int, number: int
              ) -> tuple[list[tuple[int, bytes]], tuple[int, bytes] | None]:
        """(answered frames, optional closing frame) for connection ``number``: three in four
        end with a closing frame, every kind in turn."""
        answered = [self.answered(rng) for _ in range(rng.randint(size, size + size // 2))]
        if number % 4 == 3:
            return answered, None
        return answered, rng.choice(self.closing[number % CLOSING_KINDS])


# --- the answers ------------------------------------------------------------------------

SERVER_LEVEL = "server"


@dataclass
class Expectation:
    """What the server must send for a batch, from the pure protocol."""

    max_frame_bytes: int
    server_limit: int
    home: str = HOME  # the connection's HOME topic (its TAG replaced)
    socket: PhoenixSocket = field(init=False)
    replies: list[str] = field(default_factory=list)  # in order: replies and phx_close
    home_broadcasts: list[str | bytes] = field(default_factory=list)  # in order
    other_broadcasts: list[str | bytes] = field(default_factory=list)  # may be cut by a leave
    close_code: int | None = None
    closed_by: str = ""  # "socket" (the app) or SERVER_LEVEL (the WebSocket library)
    frames_fed: int = 0

    def __post_init__(self) -> None:
        self.socket = PhoenixSocket(v2_json, max_frame_bytes=self.max_frame_bytes)

    def feed(self, opcode: int, frame: bytes) -> None:
        if self.close_code is not None:
            return
        self.frames_fed += 1
        if len(frame) > self.server_limit:
            self.close_code, self.closed_by = CLOSE_TOO_BIG, SERVER_LEVEL
            return
        if opcode == TEXT:
            try:
                message: str | bytes = frame.decode("utf-8")
            except UnicodeDecodeError:
                self.close_code, self.closed_by = CLOSE_INVALID_DATA, SERVER_LEVEL
                return
        else:
            message = frame
        self._run(self.socket.handle_frame(message))

    def _run(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, SendFrame):
                self.replies.append(action.text)
            elif isinstance(action, Subscribe):
                self._run(self.socket.joined(action))
            elif isinstance(action, (Publish, PublishBinary)):
                self._run(self.socket.published(action))
                self._broadcast(action)
            elif isinstance(action, Close):
                self.close_code, self.closed_by = action.code, "socket"
            elif not isinstance(action, Unsubscribe):
                raise AssertionError(f"unexpected action {action}")

    def _broadcast(self, action: Publish | PublishBinary) -> None:
        if isinstance(action, PublishBinary):
            frame: str | bytes = binary_frame(broadcast_message(action.topic, action.event,
                                                                action.data))
        else:
            frame = self.socket.render_broadcast(action.topic, action.event, action.payload_json)
        target = self.home_broadcasts if action.topic == self.home else self.other_broadcasts
        target.append(frame)
