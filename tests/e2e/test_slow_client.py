"""A client that stops reading is dropped, under daphne and under uvicorn; nobody else loses data.

Broadcast frames are written straight to each connection (``topics.adapters.direct_frames``), so the
node sees how many bytes a client has not taken yet; past ``DPS_MAX_SEND_BUFFER_BYTES`` the
socket leaves its topics and is closed with 1013. The stalled client here is a raw TCP socket
with a small receive buffer that joins a topic and then never reads again.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from tests.support.e2e_cluster import E2ECluster, fresh_topic, run_cluster
from tests.support.phoenix_client import PhoenixClient, socket_url
from topics.devtools.benchmark.wsclient import OP_TEXT, client_frame

pytestmark = pytest.mark.e2e

SEND_BUFFER_LIMIT = 1024 * 1024  # well above asyncio's 64 KiB high-water mark
PAYLOAD = "x" * 16384
PUBLISHES = 600  # ~10 MB: more than the kernel buffers between server and client can hold


@pytest.fixture(params=["daphne", "uvicorn"])
def small_buffer_cluster(request: pytest.FixtureRequest,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    yield from run_cluster(tmp_path_factory, server=request.param, ws=1, ts=1,
                            DPS_MAX_SEND_BUFFER_BYTES=str(SEND_BUFFER_LIMIT),
                            # The default frame bound: 600 frames of 16 KB stay under it, so
                            # only the byte bound can drop the client (under uvicorn, frames
                            # queue for ASGI send once its transport pauses).
                            DPS_MAX_PENDING_FRAMES="1000")


def stalled_member(port: int, topic: str) -> socket.socket:
    """Join ``topic`` over a raw socket, read the join reply, and then never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    sock.sendall(client_frame(OP_TEXT, json.dumps(["1", "1", topic, "phx_join", {}]).encode()))
    received = response.split(b"\r\n\r\n", 1)[1]
    while b"phx_reply" not in received:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection before the join reply"
        received += chunk
    assert b'"status":"ok"' in received
    return sock


def members_on_owner(redis_url: str, group: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        blob = client.get("dps:stats:ts-a")
    finally:
        client.close()
    stats = json.loads(blob) if blob else {"groups": []}
    return sum(sum(g["members"].values()) for g in stats["groups"] if g["group"] == group)


async def test_a_client_that_stops_reading_is_dropped_and_others_get_everything(
        small_buffer_cluster: E2ECluster) -> None:
    e2e = small_buffer_cluster
    topic = fresh_topic()
    group = topic.replace(":", ".", 1)
    stalled = stalled_member(e2e.ports[0], topic)
    try:
        async with await PhoenixClient.connect(socket_url(e2e.ports[0])) as reader:
            await reader.join_ok(topic)
            received = []
            for seq in range(PUBLISHES):
                reply = await reader.publish(topic, "big", {"seq": seq, "pad": PAYLOAD})
                assert reply.status == "ok"
                # Take each push before the next publish: the reader itself is never more than
                # one frame behind, however slowly this busy test process reads.
                received += await reader.pushes(topic, 1, timeout=30)
            # The reader got every message, in order, while the stalled client was dropped.
            assert [p.payload["seq"] for p in received] == list(range(PUBLISHES))

        ts_redis = e2e.cluster.plan.redis_url(next(n for n in e2e.cluster.nodes if n.name == "ts-a"))
        deadline = time.monotonic() + 10
        while members_on_owner(ts_redis, group) != 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # the owner's stats are refreshed every stats_interval
        assert members_on_owner(ts_redis, group) == 0  # the stalled member left its topic too
        assert any("closing a client" in line and "behind" in line for line in e2e.log), \
            "\n".join(e2e.log[-20:])
        e2e.check_running()
    finally:
        stalled.close()
