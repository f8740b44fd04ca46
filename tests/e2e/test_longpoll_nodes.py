"""Long-poll on real WS nodes (daphne, 2 WS nodes, a topic server): what one POST may cost a
node, and phoenix.js clients of both versions surviving their node's restart.

Memory: a POST of ``DPS_LONGPOLL_MAX_BODY_BYTES`` (the default, 4 MiB) used to become one dict
per line before anything was handed to the socket: 4 MiB of newlines raised the node's VmHWM
from 84 to 926 MiB. Each body here gets a fresh anonymous session, and the peak is read from
``/proc/<pid>/status`` before and after.

Restart: phoenix.js 1.8 and 1.7 (npm ``phoenix`` and ``phoenix17``, ``tests/interop/driver.mjs``)
long-poll ws-a, a WebSocket publisher sits on ws-b. The client is paused between two polls (its
next request is held back, as a sleeping laptop's) while ws-a is SIGKILLed and started again,
so its next poll brings the old session token to a node that never saw it. Phoenix answers
that with a new session and token: phoenix.js 1.8 then reconnects and rejoins; 1.7 takes the
token as its own, so DPS answers that session's first poll with an error, which makes 1.7
reconnect and rejoin too. The old answer (410, no token) made 1.7 poll on with
``token=undefined``, hundreds of times a second, and hear nothing.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.phoenix_client import PhoenixClient, socket_url
from tests.support.phoenix_driver import PhoenixDriver
from tests.support.processes import listener, peak_rss_mb
from tests.support.waiting import holds_within
from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import ClusterError, LocalCluster

pytestmark = pytest.mark.e2e

BODY_BYTES = 4 * 1024 * 1024  # the default DPS_LONGPOLL_MAX_BODY_BYTES
GROWTH_LIMIT_MB = 40
TIMEOUT_S = 60
RECOVERY_S = 20.0  # from the release of the paused client to its first delivery
DELIVERY_S = 1.0  # how long one publish is given to arrive before the next is sent
MAX_GETS = 50  # polls a recovering client may make (the old 1.7 loop made ~550 a second)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    log: list[str] = []
    env = {**os.environ, "DPS_DATABASE": str(tmp_path_factory.mktemp("lp") / "db.sqlite3"),
           "DPS_ALLOW_ANONYMOUS": "1", "DPS_LONGPOLL_WINDOW": "1"}
    for name in ("DPS_LONGPOLL_MAX_BODY_BYTES", "DPS_LONGPOLL_MAX_FRAMES_PER_POST"):
        env.pop(name, None)  # the defaults are what is measured
    local = LocalCluster(ws=2, ts=1, port=free_port_block(2), server="daphne",
                         emit=log.append, base_env=env)
    try:
        try:
            local.start()
            for node in local.ws_nodes:
                asyncio.run(_until_routable(node.port))
        except (ClusterError, OSError, TimeoutError) as exc:
            pytest.fail(f"the cluster did not start: {exc}\n" + "\n".join(log[-60:]))
        yield local
    finally:
        local.stop()


async def _until_routable(port: int) -> None:
    """Until a join and a publish round-trip through this WS node (the ring is known)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            async with await PhoenixClient.connect(socket_url(port)) as client:
                topic = f"topics:ready{uuid.uuid4().hex[:8]}"
                await client.join_ok(topic, timeout=5)
                await client.publish(topic, "ready", {}, timeout=5)
                await client.pushes(topic, 1, timeout=5)
                return
        except (OSError, TimeoutError, AssertionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # retry the round trip; bounded by the deadline


def call(port: int, method: str, query: str, body: bytes | None = None,
         origin: str | None = None) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    headers = {"content-type": "application/x-ndjson"} | ({"origin": origin} if origin else {})
    try:
        connection.request(method, f"/socket/longpoll?{query}", body=body, headers=headers)
        response = connection.getresponse()
        assert response.status == 200, response.status
        return json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("shape, body", [
    ("newlines", b"\n" * BODY_BYTES),
    ("tiny frames", b"[]\n" * (BODY_BYTES // 3)),
])
def test_a_full_size_post_costs_the_node_little_memory(cluster: LocalCluster, shape: str,
                                                       body: bytes):
    node_port = cluster.ws_nodes[0].port
    pid, _ = listener(node_port)
    session = call(node_port, "GET", "vsn=2.0.0")
    assert session["status"] == 410, session
    before = peak_rss_mb(pid)
    answer = call(node_port, "POST", f"token={session['token']}", body)
    after = peak_rss_mb(pid)
    print(f"{shape}: VmHWM {before} -> {after} MiB")
    assert after - before < GROWTH_LIMIT_MB, f"{shape}: VmHWM {before} -> {after} MiB"
    # Empty lines are no frames; a million tiny ones are over the frame cap, refused whole.
    assert answer == {"status": 200 if shape == "newlines" else 413}, answer
    polled = call(node_port, "GET", f"token={session['token']}")
    assert polled["status"] == 204 and polled["token"] == session["token"], polled


def test_a_foreign_origin_can_neither_post_into_nor_poll_a_session(cluster: LocalCluster):
    """The issue's probe: a cookieless client sending ``Origin: http://evil.example`` posted
    into a user's session and polled its messages (200)."""
    port = cluster.ws_nodes[0].port
    own = f"http://127.0.0.1:{port}"
    session = call(port, "GET", "vsn=2.0.0", origin=own)
    token = session["token"]
    join = json.dumps(["1", "1", f"topics:o{uuid.uuid4().hex[:8]}", "phx_join", {}]).encode()
    assert call(port, "POST", f"token={token}", join, origin=own) == {"status": 200}
    evil = "http://evil.example"
    assert call(port, "POST", f"token={token}", join, origin=evil) == {"status": 403}
    assert call(port, "GET", f"token={token}", origin=evil) == {"status": 403}
    polled = call(port, "GET", f"token={token}", origin=own)  # the reply is still there
    assert polled["status"] == 200 and json.loads(polled["messages"][0])[3] == "phx_reply"





@pytest.mark.parametrize("version", ["phoenix", "phoenix17"])
def test_a_long_poll_client_survives_its_node_restarting(cluster: LocalCluster, version: str):
    ws_a, ws_b = cluster.ws_nodes
    topic = f"topics:lp{uuid.uuid4().hex[:10]}"
    with PhoenixDriver() as js:
        js.connect("lp", url=f"ws://127.0.0.1:{ws_a.port}/socket", version=version,
                   transport="longpoll")
        js.connect("pub", url=f"ws://127.0.0.1:{ws_b.port}/socket")
        js.join("lp", topic)
        js.join("pub", topic)
        js.publish("pub", topic, count=1, start=0)
        assert holds_within(lambda: js.received("lp", topic), 10)  # the first delivery

        js.hold()  # the client's next poll waits, no request in flight
        cluster.kill_node(ws_a.name)
        cluster.start_node(ws_a.name)
        before = js.requests()
        js.release()

        heard, number, deadline = False, 1, time.monotonic() + RECOVERY_S
        while not heard and time.monotonic() < deadline:
            js.publish("pub", topic, count=1, start=number)
            heard = holds_within(lambda n=number: any(
                body == {"n": n} for _, body in js.received("lp", topic)), DELIVERY_S)
            number += 1
        after = js.requests()
    gets = after["GET"] - before["GET"]
    assert heard, f"{version}: deaf after the restart ({gets} GETs, {after})"
    assert after["undefinedToken"] == 0, after
    assert gets < MAX_GETS, f"{version}: {gets} GETs to recover"
    print(f"{version}: recovered after {gets} GETs, {after['POST'] - before['POST']} POSTs")
