"""The server patches (``topics.adapters``) on live nodes, under daphne and under uvicorn.

- The canary: with every patch on, the fast paths are taken (their fallback counters stay at
  0 in the node's /metrics, and the direct receive path read the frames sent here).
- Direct receive takes a read only at a frame boundary of the server's parser: a frame whose
  header and mask arrive before its payload is one frame, never the frames its payload looks
  like (the smuggling probe), and every split point of a few frames is answered.
- An invalid close frame is answered with a close code (1002, or 1007 for a reason that is not
  UTF-8), not a TCP reset, under both servers.
- Credentials in the query string never reach either server's access log.
"""
from __future__ import annotations

import asyncio
import json
import re
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support.e2e_cluster import E2ECluster, fresh_topic, run_cluster
from tests.support.metrics import node_metrics
from tests.support.raw_frames import WAIT_S, Answers, heartbeat, open_raw
from topics.devtools.benchmark.wsclient import (
    OP_CLOSE,
    RawWebSocket,
    client_frame,
    connect,
)

pytestmark = pytest.mark.e2e
# A pause between two writes so that the server reads them separately: the fault these tests
# inject (a frame cut by TCP), not a wait for a condition.
SEGMENT_PAUSE_S = 0.05
SECRET = "s3cretV4lue"


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def node(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    yield from run_cluster(tmp_path_factory, server=request.param, ws=1, ts=1)


async def _open(node: E2ECluster) -> tuple[RawWebSocket, Answers]:
    return await open_raw(node.url(0))


def metrics(node: E2ECluster) -> dict[str, float]:
    return node_metrics(node.cluster.plan.metrics_url(node.cluster.ws_nodes[0]))


# --- the canary ---------------------------------------------------------------------------------

FALLBACKS = ("dps_direct_frame_fallbacks_total", "dps_direct_receive_fallbacks_total",
             "dps_server_patch_fallbacks_total")


def test_the_fast_paths_are_taken(node: E2ECluster) -> None:
    before = metrics(node)

    async def scenario() -> None:
        ws, answers = await _open(node)
        topic = fresh_topic()
        ws.send_text(json.dumps(["j", "join", topic, "phx_join", {}]))
        await answers.wait_for(1)
        ws.send_text(json.dumps(["j", "pub", topic, "publish", ["event", {"n": 1}]]))
        await answers.wait_for(3)  # the reply and the broadcast
        assert ["j", None, topic, "event", {"n": 1}] in answers.frames
        for n in range(20):  # one at a time: each is a whole frame in a read of its own
            ws.transport.write(heartbeat(f"hb{n}"))
            await answers.wait_for(4 + n)
        await ws.close()

    asyncio.run(scenario())
    after = metrics(node)
    assert {name: after[name] for name in FALLBACKS} == dict.fromkeys(FALLBACKS, 0.0)
    # Each frame reached the node in a read of its own, at a frame boundary: all direct.
    assert after["dps_direct_receive_frames_total"] - before["dps_direct_receive_frames_total"] \
        >= 20


def test_daphnes_due_only_scans_run(node: E2ECluster) -> None:
    if node.cluster.plan.server != "daphne":
        assert metrics(node)["dps_daphne_scan_ticks_total"] == 0  # nothing of daphne runs
        return

    async def ticks_advance() -> None:
        first = metrics(node)["dps_daphne_scan_ticks_total"]
        async with asyncio.timeout(WAIT_S):
            while metrics(node)["dps_daphne_scan_ticks_total"] <= first:
                await asyncio.sleep(0.5)  # a bounded poll: the scan ticks every 2 s

    asyncio.run(ticks_advance())


# --- direct receive at frame boundaries only ----------------------------------------------------


def test_a_payload_that_looks_like_a_frame_is_not_smuggled(node: E2ECluster) -> None:
    """The probe: a binary frame's header with a zero mask, then (in a later read) a masked
    heartbeat as its payload. It is one binary message, which is not a Phoenix frame: the
    socket closes with 1007, and the hidden heartbeat is never answered."""
    async def scenario() -> None:
        ws, answers = await _open(node)
        hidden = heartbeat("SMUGGLED")
        ws.transport.write(bytes([0x82, 0x80 | len(hidden)]) + b"\0\0\0\0")
        await asyncio.sleep(SEGMENT_PAUSE_S)  # the fault: a frame split across TCP segments
        ws.transport.write(hidden + heartbeat("after"))
        async with asyncio.timeout(WAIT_S):
            await ws.closed
        assert "SMUGGLED" not in answers.refs() and "after" not in answers.refs()
        assert ws.close_code == 1007

    asyncio.run(scenario())


@pytest.mark.parametrize("padding", [0, 200], ids=["7-bit length", "16-bit length"])
def test_a_frame_split_right_after_its_header_and_mask_is_answered(
        node: E2ECluster, padding: int) -> None:
    async def scenario() -> None:
        ws, answers = await _open(node)
        frame = heartbeat("1", padding)
        header = 6 if padding == 0 else 8  # 2 bytes, the 16-bit length, the 4-byte mask
        ws.transport.write(frame[:header])
        await asyncio.sleep(SEGMENT_PAUSE_S)  # the fault: a frame split across TCP segments
        ws.transport.write(frame[header:])
        await answers.wait_for(1)
        ws.transport.write(heartbeat("2"))
        await answers.wait_for(2)
        assert answers.refs() == ["1", "2"]
        assert all(f[4]["status"] == "ok" for f in answers.frames)
        await ws.close()

    asyncio.run(scenario())


def three_frames(round_: int) -> bytes:
    """Two short frames around one with the 16-bit length, the same size every round."""
    return heartbeat(f"{round_:04d}a") + heartbeat(f"{round_:04d}b", padding=130) \
        + heartbeat(f"{round_:04d}c")


def test_every_split_point_of_a_few_frames_is_answered(node: E2ECluster) -> None:
    async def scenario() -> None:
        ws, answers = await _open(node)
        size = len(three_frames(0))
        for split in range(1, size):
            data = three_frames(split)  # fresh masks every round
            ws.transport.write(data[:split])
            await asyncio.sleep(0.002)  # separate reads (the fault); TCP may still join some
            ws.transport.write(data[split:])
            await answers.wait_for(3 * split)
            assert answers.refs()[-3:] == [f"{split:04d}{x}" for x in "abc"], split
        assert all(f[4]["status"] == "ok" for f in answers.frames)
        await ws.close()

    asyncio.run(scenario())


# --- invalid close frames -----------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "code"), [
    (struct.pack("!H", 999), 1002),
    (struct.pack("!H", 1005), 1002),
    (struct.pack("!H", 5000), 1002),
    (b"\x03", 1002),
    (struct.pack("!H", 1000) + b"\xff\xfe", 1007),
], ids=["999", "1005", "5000", "1-byte payload", "reason not UTF-8"])
def test_an_invalid_close_frame_gets_a_close_code(node: E2ECluster, payload: bytes,
                                                   code: int) -> None:
    async def scenario() -> None:
        ws, _answers = await _open(node)
        ws.transport.write(client_frame(OP_CLOSE, payload))
        async with asyncio.timeout(WAIT_S):
            await ws.closed
        assert ws.close_code == code  # None: a TCP reset without a close frame

    asyncio.run(scenario())
    node.check_running()


# --- credentials kept out of the access logs ----------------------------------------------------


def test_credentials_in_query_strings_are_redacted_from_the_access_log(node: E2ECluster) -> None:
    """uvicorn logs each WebSocket handshake and HTTP request with its query string; daphne
    its HTTP requests (long-poll) with it, its WebSocket handshakes by path only."""
    port = node.ports[0]
    mark = fresh_topic()  # tells this test's lines from the others'
    queries = {"token": f"token={SECRET}1&m={mark}", "authToken": f"m={mark}&authToken={SECRET}2",
               "access_token": f"vsn=2.0.0&m={mark}&access_token={SECRET}3"}

    async def refused_handshake(query: str) -> None:
        try:
            ws = await connect(f"ws://127.0.0.1:{port}/socket/websocket?{query}",
                               lambda text: None)
        except ConnectionError:
            return  # an unknown token is refused: the server logs the request anyway
        await ws.close()

    for query in queries.values():
        asyncio.run(refused_handshake(query))
    for query in queries.values():  # logged last: once they are in, so is everything before
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/socket/longpoll?{query}",
                                   timeout=10).close()
        except urllib.error.HTTPError:
            pass  # the status does not matter here, only what the log says

    async def logged() -> list[str]:
        async with asyncio.timeout(WAIT_S):
            while True:
                lines = [line for line in node.log if mark in line]
                if sum("/socket/longpoll" in line for line in lines) >= len(queries):
                    return lines
                await asyncio.sleep(0.1)  # a bounded poll: the log pump is another thread

    lines = asyncio.run(logged())
    assert not [line for line in node.log if SECRET in line]
    handshakes = 3 if node.cluster.plan.server == "uvicorn" else 0
    assert sum("/socket/websocket" in line for line in lines) == handshakes, lines
    for name in queries:
        redacted = [line for line in lines if re.search(rf"[?&]{name}=\[redacted\]", line)]
        assert len(redacted) == (2 if handshakes else 1), (name, lines)
