"""What one long-poll POST may cost a real WS node (daphne): its peak memory (VmHWM) must not
grow with the number of lines in the body.

A POST of ``DPS_LONGPOLL_MAX_BODY_BYTES`` (the default, 4 MiB) used to become one dict per
line before anything was handed to the socket: 4 MiB of newlines raised the node's VmHWM from
84 to 926 MiB. Each body here gets a fresh anonymous session, and the peak is read from
``/proc/<pid>/status`` before and after.
"""
from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator

import pytest

from tests.support.processes import listener, peak_rss_mb
from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import ClusterError, LocalCluster

pytestmark = pytest.mark.e2e

BODY_BYTES = 4 * 1024 * 1024  # the default DPS_LONGPOLL_MAX_BODY_BYTES
GROWTH_LIMIT_MB = 40
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def node_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log: list[str] = []
    port = free_port_block(1)
    env = {**os.environ, "DPS_DATABASE": str(tmp_path_factory.mktemp("lp") / "db.sqlite3"),
           "DPS_ALLOW_ANONYMOUS": "1", "DPS_LONGPOLL_WINDOW": "0.5"}
    for name in ("DPS_LONGPOLL_MAX_BODY_BYTES", "DPS_LONGPOLL_MAX_FRAMES_PER_POST"):
        env.pop(name, None)  # the defaults are what is measured
    cluster = LocalCluster(ws=1, ts=1, port=port, server="daphne", emit=log.append,
                           base_env=env)
    try:
        try:
            cluster.start()
        except (ClusterError, OSError, TimeoutError) as exc:
            pytest.fail(f"the cluster did not start: {exc}\n" + "\n".join(log[-60:]))
        yield port
        assert cluster.poll() is None, "\n".join(log[-60:])
    finally:
        cluster.stop()


def call(port: int, method: str, query: str, body: bytes | None = None) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        connection.request(method, f"/socket/longpoll?{query}", body=body,
                           headers={"content-type": "application/x-ndjson"})
        response = connection.getresponse()
        assert response.status == 200, response.status
        return json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("shape, body", [
    ("newlines", b"\n" * BODY_BYTES),
    ("tiny frames", b"[]\n" * (BODY_BYTES // 3)),
])
def test_a_full_size_post_costs_the_node_little_memory(node_port: int, shape: str,
                                                       body: bytes):
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
