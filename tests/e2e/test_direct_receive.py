"""Client frames read straight off the connection (``topics.adapters.direct_receive``), on a live node.

Under daphne the node cuts simple frames out of each read itself and answers heartbeats in
its read callback; every other frame, and everything from the first frame autobahn must see,
takes autobahn's path. These tests send byte sequences that mix the two in one read (and one
frame cut across reads) and check the answers and their order. They run under uvicorn too
(where the server's own parser reads everything): the answers must be the same.
"""
from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator

import pytest

from tests.support.e2e_cluster import E2ECluster, fresh_topic, run_cluster
from tests.support.raw_frames import WAIT_S, Answers, heartbeat, open_raw
from topics.devtools.benchmark.wsclient import OP_CONT, OP_PING, OP_TEXT, RawWebSocket, client_frame

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def node(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    yield from run_cluster(tmp_path_factory, server=request.param, ws=1, ts=1)


def fragment(opcode: int, payload: bytes, final: bool) -> bytes:
    """A masked frame with FIN as given (client_frame always sets it)."""
    frame = bytearray(client_frame(opcode, payload))
    if not final:
        frame[0] &= 0x7F
    return bytes(frame)


async def _open(node: E2ECluster) -> tuple[RawWebSocket, Answers]:
    return await open_raw(node.url(0))


def test_frames_of_one_read_are_answered_in_order(node: E2ECluster) -> None:
    async def scenario() -> None:
        ws, answers = await _open(node)
        topic = fresh_topic()
        half = b'[null,"6","phoenix",'
        ws.transport.write(b"".join([
            heartbeat("1"),
            client_frame(OP_TEXT, json.dumps(["j", "2", topic, "phx_join", {}]).encode()),
            client_frame(OP_TEXT, json.dumps(["j", "3", topic, "publish",
                                              ["event", {"n": 1}]]).encode()),
            heartbeat("4"),
            client_frame(OP_PING, b"ping"),  # a control frame: autobahn's from here on
            heartbeat("5"),
            fragment(OP_TEXT, half, final=False),  # a fragmented heartbeat
            fragment(OP_CONT, b'"heartbeat",{}]', final=True),
            heartbeat("7", padding=200),
        ]))
        frames = await answers.wait_for(8)  # 7 replies and the publish's broadcast
        replies = [f[1] for f in frames if f[3] == "phx_reply"]
        assert replies == ["1", "2", "3", "4", "5", "6", "7"], frames
        assert all(f[4]["status"] == "ok" for f in frames if f[3] == "phx_reply"), frames
        broadcast = next(i for i, f in enumerate(frames) if f[3] == "event")
        # The publisher's reply precedes its own copy of the message.
        assert broadcast > next(i for i, f in enumerate(frames) if f[1] == "3")
        assert frames[broadcast] == ["j", None, topic, "event", {"n": 1}]
        await ws.close()

    asyncio.run(scenario())


def test_a_frame_cut_across_reads_is_answered(node: E2ECluster) -> None:
    async def scenario() -> None:
        ws, answers = await _open(node)
        data = heartbeat("1") + heartbeat("2", padding=300) + heartbeat("3")
        for start in range(0, len(data), 7):
            ws.transport.write(data[start:start + 7])
            await asyncio.sleep(0.002)  # separate segments (TCP may still join some)
        frames = await answers.wait_for(3)
        assert [f[1] for f in frames] == ["1", "2", "3"], frames
        await ws.close()

    asyncio.run(scenario())


def test_invalid_utf8_behind_a_heartbeat_closes_with_1007(node: E2ECluster) -> None:
    async def scenario() -> None:
        ws, answers = await _open(node)
        ws.transport.write(heartbeat("1") + client_frame(OP_TEXT, b'["\xff\xfe"]')
                           + heartbeat("2"))
        async with asyncio.timeout(WAIT_S):
            await ws.closed
        # The heartbeat's reply may lose the race with the close (uvicorn's parser fails the
        # connection before its consumer ran); nothing after the bad frame is answered.
        assert [f[1] for f in answers.frames] in (["1"], []), answers.frames
        assert ws.close_code == 1007

    asyncio.run(scenario())


def test_a_frame_over_the_direct_size_is_still_read(node: E2ECluster) -> None:
    async def scenario() -> None:
        ws, answers = await _open(node)
        topic = fresh_topic()
        ws.send_text(json.dumps(["j", "1", topic, "phx_join", {}]))
        await answers.wait_for(1)
        big = "x" * 70_000  # over MAX_DIRECT_PAYLOAD, under the socket's frame limit
        ws.transport.write(client_frame(OP_TEXT, json.dumps(
            ["j", "2", topic, "publish", ["event", {"big": big}]]).encode()) + heartbeat("3"))
        frames = await answers.wait_for(4)
        assert [f[1] for f in frames if f[3] == "phx_reply"] == ["1", "2", "3"]
        # The broadcast comes through the topic server: after the publish's reply, and in
        # any order with the heartbeat's.
        broadcast = next(i for i, f in enumerate(frames) if f[3] == "event")
        assert broadcast > 1 and frames[broadcast][4] == {"big": big}
        await ws.close()

    asyncio.run(scenario())


def test_a_closed_socket_answers_nothing_more(node: E2ECluster) -> None:
    async def scenario() -> None:
        ws, answers = await _open(node)
        close = client_frame(0x8, struct.pack("!H", 1000))
        ws.transport.write(heartbeat("1") + close + heartbeat("2"))
        async with asyncio.timeout(WAIT_S):
            await ws.closed
        # As above, the first reply may lose the race with the close under uvicorn.
        assert [f[1] for f in answers.frames] in (["1"], []), answers.frames

    asyncio.run(scenario())
