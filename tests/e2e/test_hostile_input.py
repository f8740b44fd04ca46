"""Hostile input against a live WS node, under daphne and under uvicorn.

Over 10,000 generated frames per server (tests/support/hostile_frames.py: truncated and garbled JSON,
wrong types at each position, deep nesting, huge numbers, NaN, lone surrogates, invalid UTF-8,
frames over the socket's and the server's limits, binary pushes and binary headers whose lengths
lie), many per connection, each connection checked against the answers the README's protocol
table specifies (computed by the pure protocol): the exact replies in order, the exact
broadcasts, the close code. Long-poll bodies of every shape go to the same node. Meanwhile a
well-behaved client on the node publishes and must receive every one of its messages, in order;
afterwards the node's log must hold no traceback and no error. The module also holds the tests
of the issue's other findings on a live node: inbound backpressure under daphne, the listen
backlog, and clients that close right after a publish.
"""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.e2e_cluster import E2ECluster, fresh_topic, run_cluster
from tests.support.hostile_frames import (
    BINARY,
    HOME,
    SERVER_LEVEL,
    TAG,
    TEXT,
    Expectation,
    FramePool,
    answered_binary,
    answered_text,
    closing_frame,
)
from tests.support.phoenix_client import PhoenixClient
from tests.support.processes import listener, peak_rss_mb
from topics.devtools.benchmark.wsclient import connect
from topics.devtools.local_cluster import LISTEN_BACKLOG
from topics.protocol import v2_binary

pytestmark = pytest.mark.e2e

MAX_FRAME_BYTES = 64 * 1024
SERVER_LIMIT = 4 * MAX_FRAME_BYTES  # what cluster_runner lets the server itself accept
LONGPOLL_MAX_BODY = 64 * 1024
CONNECTIONS = 90  # per server, 100-150 frames each
PARALLEL = 6  # connections at once: a publish's round trip to the topic server overlaps others
FRAMES_PER_SERVER = 10_000
WAIT_S = 30.0
# What must never appear in a node's log: tracebacks and errors of any logger.
BAD_LOG = re.compile(r"Traceback|\bERROR\b|CRITICAL|Task exception|Unexpected ASGI|"
                     r"Exception in ASGI")


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def node(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    yield from run_cluster(tmp_path_factory, server=request.param, ws=1, ts=1,
                            DPS_MAX_FRAME_BYTES=str(MAX_FRAME_BYTES),
                            DPS_LONGPOLL_MAX_BODY_BYTES=str(LONGPOLL_MAX_BODY),
                            DPS_LONGPOLL_WINDOW="0.2")


def assert_clean_log(node: E2ECluster, since: int = 0) -> None:
    bad = [line for line in node.log[since:] if BAD_LOG.search(line)]
    assert not bad, "\n".join(node.log[since:][-60:])
    node.check_running()


# --- the findings on a live node (first: the peak RSS must not be set by the fuzz) ----

def test_a_client_pushing_faster_than_it_is_served_costs_bounded_memory(node: E2ECluster):
    """2,000 publishes of 50 KB written at once: daphne used to queue them all (+83 MB)."""
    pid, _ = listener(node.ports[0])
    topic = fresh_topic()

    async def flood() -> int:
        # Past the publish bucket's burst a publish is answered "rate limited" and not
        # broadcast: done when every publish is answered and every ok one came back.
        answers: Counter[str] = Counter()

        def on_text(text: str) -> None:
            _, ref, _, event, payload = json.loads(text)
            if event == "phx_reply" and ref == "2":
                answers[payload["status"]] += 1
            elif event == "e":
                answers["broadcast"] += 1

        ws = await connect(node.url(0), on_text)
        ws.send_text(json.dumps(["1", "1", topic, "phx_join", {}]))
        frame = json.dumps(["1", "2", topic, "publish", ["e", {"pad": "x" * 50_000}]])
        before = peak_rss_mb(pid)
        for _ in range(2000):
            ws.send_text(frame)
        deadline = asyncio.get_running_loop().time() + 120
        while answers["ok"] + answers["error"] < 2000 or answers["broadcast"] < answers["ok"]:
            assert not ws.closed.done(), (ws.close_code, answers)
            assert asyncio.get_running_loop().time() < deadline, answers
            await asyncio.sleep(0.05)  # polling the counters, bounded by the deadline
        await ws.close()
        assert answers["ok"] >= 1000 and answers["broadcast"] == answers["ok"], answers
        return peak_rss_mb(pid) - before

    growth = asyncio.run(flood())
    assert growth < 40, f"peak RSS grew by {growth} MB"
    assert_clean_log(node)


def test_ws_nodes_listen_with_a_large_backlog(node: E2ECluster):
    # daphne's -p leaves Twisted's backlog at 50: a connection storm then waits on SYN retries.
    _, backlog = listener(node.ports[0])
    assert backlog >= min(LISTEN_BACKLOG, 1024), backlog


@pytest.mark.parametrize(("opcode", "frame", "code"), [
    (TEXT, b'[null,"1","phoenix","heartbeat",{"x":"\xff"}]', 1007),
    (TEXT, b"[" + b" " * MAX_FRAME_BYTES, 1009),        # over DPS_MAX_FRAME_BYTES
    (TEXT, b"[" + b" " * SERVER_LIMIT, 1009),           # over the server's own frame limit
    (BINARY, b"\x00" * (SERVER_LIMIT + 1), 1009),
], ids=["invalid-utf8", "over-socket-limit", "over-server-limit", "binary-over-server-limit"])
def test_the_readme_close_codes(node: E2ECluster, opcode: int, frame: bytes, code: int):
    """daphne used to drop the TCP connection (no close frame) for the first, third and fourth."""
    async def send_one() -> int | None:
        ws = await connect(node.url(0), lambda text: None)
        ws.send_frame(opcode, frame)
        await asyncio.wait_for(asyncio.shield(ws.closed), WAIT_S)
        return ws.close_code

    assert asyncio.run(send_one()) == code


def open_connections(port: int) -> float:
    """The node's ``dps_connections`` gauge, from its /metrics."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
    try:
        client.request("GET", "/metrics")
        body = client.getresponse().read().decode()
    finally:
        client.close()
    [line] = [line for line in body.splitlines() if line.startswith("dps_connections{")]
    return float(line.split()[-1])


def test_clients_closing_right_after_a_publish_or_join_log_nothing(node: E2ECluster):
    """...and each consumer goes with its connection (it used to die on ClientDisconnected and
    leave its socket counted, and its idle timer alive, for DPS_IDLE_TIMEOUT)."""
    since = len(node.log)
    before = open_connections(node.ports[0])

    async def rounds() -> None:
        for n in range(100):
            ws = await connect(node.url(0), lambda text: None)
            topic = fresh_topic()
            ws.send_text(json.dumps(["1", "1", topic, "phx_join", {}]))
            for ref in range(2, 4):
                ws.send_text(json.dumps(["1", str(ref), topic, "publish",
                                         ["e", {"x": "y" * 1000}]]))
            if n % 2:
                ws.transport.abort()  # a TCP reset
            else:
                ws.transport.close()
        # A client after the storm still gets its answers: the node is not wedged.
        async with await PhoenixClient.connect(node.url(0)) as probe:
            topic = fresh_topic()
            await probe.join_ok(topic)
            assert (await probe.publish(topic, "e", {})).status == "ok"

    asyncio.run(rounds())
    deadline = time.monotonic() + 15  # well under the cluster's DPS_IDLE_TIMEOUT (60 s)
    while open_connections(node.ports[0]) > before and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the gauge, bounded by the deadline
    assert open_connections(node.ports[0]) == before
    assert_clean_log(node, since)


# --- the fuzz -----------------------------------------------------------------------------

class Bystander(threading.Thread):
    """A well-behaved client on the node: publishes in a loop and checks it gets each once."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.topic = fresh_topic()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.sent = 0
        self.received: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.ready.set()

    async def _main(self) -> None:
        async with await PhoenixClient.connect(self.url) as client:
            await client.join_ok(self.topic)
            self.ready.set()
            while not self.stopping.is_set():
                reply = await client.publish(self.topic, "seq", {"n": self.sent}, timeout=WAIT_S)
                assert reply.status == "ok", reply
                self.sent += 1
                [push] = await client.pushes(self.topic, 1, timeout=WAIT_S)
                self.received.append(push.payload["n"])

    def finish(self) -> None:
        self.stopping.set()
        self.join(WAIT_S + 5)
        assert self.error is None, repr(self.error)
        assert self.sent > 0 and self.received == list(range(self.sent))


class Connection:
    """One fuzzed connection: what it received, sorted as replies and broadcasts."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.replies: list[str] = []
        self.home_broadcasts: list[str | bytes] = []
        self.other_broadcasts: list[str | bytes] = []

    def on_text(self, text: str) -> None:
        value = json.loads(text)
        if value[3] in ("phx_reply", "phx_close"):
            self.replies.append(text)
        else:
            self._broadcast(value[2], text)

    def on_binary(self, data: bytes) -> None:
        self._broadcast(v2_binary.decode_broadcast(data)[0], data)

    def _broadcast(self, topic: str, frame: str | bytes) -> None:
        (self.home_broadcasts if topic == self.home else self.other_broadcasts).append(frame)


def is_subsequence(got: list, expected: list) -> bool:
    remaining = iter(expected)
    return all(item in remaining for item in got)


async def run_batch(url: str, number: int, answered: list, closing: tuple | None) -> int:
    """Send one batch on a new connection and check every answer; the frames it counted."""
    tag = b"%04d" % (number % 10_000)
    home = HOME.replace(TAG.decode(), tag.decode())
    expected = Expectation(MAX_FRAME_BYTES, SERVER_LIMIT, home)
    got = Connection(home)
    ws = await connect(url, got.on_text, on_binary=got.on_binary)
    frames = [(TEXT, json.dumps(["home", "home", home, "phx_join", {}]).encode())]
    frames += [(opcode, frame.replace(TAG, tag)) for opcode, frame in answered]
    if closing is not None:
        frames.append((closing[0], closing[1].replace(TAG, tag)))
    for opcode, frame in frames:
        expected.feed(opcode, frame)
    if expected.close_code is None:  # its reply says every frame before it was answered
        sentinel = json.dumps([None, "sentinel", "phoenix", "heartbeat", {}]).encode()
        frames.append((TEXT, sentinel))
        expected.feed(TEXT, sentinel)
    for opcode, frame in frames:
        ws.send_frame(opcode, frame)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    if expected.close_code is None:
        while (len(got.replies) < len(expected.replies)
               or len(got.home_broadcasts) < len(expected.home_broadcasts)):
            assert not ws.closed.done(), f"closed with {ws.close_code}"
            assert loop.time() < deadline, "timed out waiting for the answers"
            await asyncio.sleep(0.005)  # polling what arrived, bounded by the deadline
        assert got.replies == expected.replies
        assert got.home_broadcasts == expected.home_broadcasts
        await ws.close()
    else:
        await asyncio.wait_for(asyncio.shield(ws.closed), WAIT_S)
        assert ws.close_code == expected.close_code, (closing, got.replies[-3:])
        if expected.closed_by == SERVER_LEVEL:  # the library closes before the app catches up
            assert got.replies == expected.replies[:len(got.replies)]
        else:
            assert got.replies == expected.replies
        assert got.home_broadcasts == expected.home_broadcasts[:len(got.home_broadcasts)]
    assert is_subsequence(got.other_broadcasts, expected.other_broadcasts)
    return expected.frames_fed


@pytest.fixture(scope="module")
def pool() -> FramePool:
    return FramePool.generate(MAX_FRAME_BYTES, SERVER_LIMIT)


def test_hostile_frames_get_their_specified_answers_and_bystanders_lose_nothing(
        node: E2ECluster, pool: FramePool):
    since = len(node.log)
    bystander = Bystander(node.url(0))
    bystander.start()
    assert bystander.ready.wait(WAIT_S) and bystander.error is None, repr(bystander.error)
    rng = random.Random(13)

    async def fuzz() -> int:
        batches = [pool.batch(rng, 100, number) for number in range(CONNECTIONS)]
        counts = []
        for start in range(0, CONNECTIONS, PARALLEL):
            counts += await asyncio.gather(*(
                run_batch(node.url(0), number, *batches[number])
                for number in range(start, min(start + PARALLEL, CONNECTIONS))))
        return sum(counts)

    try:
        frames = asyncio.run(fuzz())
    finally:
        bystander.finish()
    assert frames >= FRAMES_PER_SERVER, frames
    assert_clean_log(node, since)


# --- long-poll bodies ----------------------------------------------------------------------

def _lines(frames: list[bytes | tuple]) -> bytes:
    out = []
    for frame in frames:
        opcode, data = frame if isinstance(frame, tuple) else (TEXT, frame)
        out.append(base64.b64encode(data) if opcode == BINARY else data)
    return b"\n".join(out)


_bodies = st.one_of(
    st.binary(max_size=500),
    st.lists(answered_text(), max_size=20).map(_lines),
    st.lists(answered_binary().map(lambda f: (BINARY, f)), max_size=10).map(_lines),
    closing_frame(MAX_FRAME_BYTES, SERVER_LIMIT).map(lambda f: _lines([f])),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=\n", max_size=200).map(str.encode),
    st.just(b"[" * (LONGPOLL_MAX_BODY + 1)),
    st.just(b""),
)
_content_types = st.sampled_from(["application/x-ndjson", "application/json", "text/plain",
                                  None])


class LongPollClient:
    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
        self.token: str | None = None

    def request(self, method: str, query: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, dict | None]:
        headers = {"content-type": content_type} if content_type else {}
        self.http.request(method, f"/socket/longpoll?{query}", body=body, headers=headers)
        response = self.http.getresponse()
        data = response.read()
        assert response.getheader("content-type") == "application/json" or not data
        return response.status, json.loads(data) if data else None

    def session(self) -> str:
        if self.token is None:
            status, answer = self.request("GET", "vsn=2.0.0")
            assert (status, answer["status"]) == (200, 410), answer
            self.token = answer["token"]
        return self.token


def test_long_poll_bodies_of_every_shape_get_an_answer(node: E2ECluster):
    since = len(node.log)
    client = LongPollClient(node.ports[0])
    statuses: dict[int, int] = {}

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(body=_bodies, content_type=_content_types, method=st.sampled_from(
        ["POST", "POST", "POST", "GET", "PUT", "DELETE"]), token=st.sampled_from(
        ["session", "session", "junk", "none"]))
    def fuzz(body: bytes, content_type: str | None, method: str, token: str) -> None:
        query = {"session": f"token={client.session()}", "junk": "token=AAAA",
                 "none": ""}[token]
        status, answer = client.request(method, query, body if method == "POST" else None,
                                        content_type)
        if method in ("PUT", "DELETE"):
            assert status == 400
            return
        assert status in (200, 413), (status, answer)
        assert answer["status"] in (200, 204, 400, 403, 410, 413), answer
        if status == 413:
            assert len(body) > LONGPOLL_MAX_BODY
        statuses[answer["status"]] = statuses.get(answer["status"], 0) + 1
        if answer["status"] in (400, 410) and token == "session":
            client.token = None  # that session is over; the next example opens another
        elif token == "session" and method == "POST":
            # Its replies come with the next poll; a session the batch closed is gone.
            polled, reply = client.request("GET", f"token={client.session()}")
            assert polled == 200 and reply["status"] in (200, 204, 410), reply
            if reply["status"] == 410:
                client.token = None

    fuzz()
    assert {200, 410, 413} <= set(statuses), statuses
    assert_clean_log(node, since)


def test_a_long_poll_session_gets_the_answers_a_websocket_would(node: E2ECluster):
    client = LongPollClient(node.ports[0])
    token = client.session()
    topic = fresh_topic()
    frames = [json.dumps(["1", "1", topic, "phx_join", {}]).encode(),
              json.dumps(["1", "2", topic, "publish", ["e", {"x": [1, 2]}]]).encode(),
              json.dumps(["1", "3", topic, "publish", ["e", {"x": float("inf")}]])
              .replace("Infinity", "1e400").encode(),
              json.dumps(["1", "4", topic, "publish", ["\ud800", {}]]).encode(),
              json.dumps([None, "5", "phoenix", "heartbeat", {}]).encode()]
    expected = Expectation(MAX_FRAME_BYTES, SERVER_LIMIT)
    for frame in frames:
        expected.feed(TEXT, frame)
    assert client.request("POST", f"token={token}", b"\n".join(frames),
                          "application/x-ndjson") == (200, {"status": 200})
    messages: list[str] = []
    for _ in range(100):  # polls of at most DPS_LONGPOLL_WINDOW (0.2 s) each
        if len(messages) >= len(expected.replies) + 1:  # + the broadcast
            break
        status, answer = client.request("GET", f"token={token}")
        assert answer["status"] in (200, 204), answer
        messages += answer["messages"]
    replies = [m for m in messages if json.loads(m)[3] == "phx_reply"]
    assert replies == expected.replies
    assert [m for m in messages if json.loads(m)[3] == "e"] == [
        f'["1",null,"{topic}","e",{{"x":[1,2]}}]']
