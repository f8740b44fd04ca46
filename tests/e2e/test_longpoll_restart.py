"""A phoenix.js long-poll client, 1.8 and 1.7 (npm ``phoenix`` and ``phoenix17``), survives a
restart of its WS node: after the restart it is joined again and receives what is published.

Real processes: 2 WS nodes under daphne, a topic server, phoenix.js under Node
(``tests/interop/driver.mjs``). The long-poll client sits on ws-a, a WebSocket publisher on
ws-b. The client is paused between two polls (its next request is held back, as a sleeping
laptop's) while ws-a is SIGKILLed and started again, so its next poll brings the old session
token to a node that never saw it. Phoenix answers that with a new session and token: phoenix.js
1.8 then reconnects and rejoins; 1.7 takes the token as its own, so DPS answers that session's
first poll with an error, which makes 1.7 reconnect and rejoin too. The old answer (410, no
token) made 1.7 poll on with ``token=undefined``, hundreds of times a second, and hear nothing.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.phoenix_driver import PhoenixDriver
from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import ClusterError, LocalCluster

pytestmark = pytest.mark.e2e

RECOVERY_S = 20.0  # from the release of the paused client to its first delivery
DELIVERY_S = 1.0  # how long one publish is given to arrive before the next is sent
MAX_GETS = 50  # polls a recovering client may make (the old 1.7 loop made ~300 a second)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    log: list[str] = []
    env = {**os.environ, "DPS_DATABASE": str(tmp_path_factory.mktemp("lp") / "db.sqlite3"),
           "DPS_ALLOW_ANONYMOUS": "1", "DPS_LONGPOLL_WINDOW": "1"}
    local = LocalCluster(ws=2, ts=1, port=free_port_block(2), server="daphne",
                         emit=log.append, base_env=env)
    try:
        try:
            local.start()
        except (ClusterError, OSError, TimeoutError) as exc:
            pytest.fail(f"the cluster did not start: {exc}\n" + "\n".join(log[-60:]))
        yield local
    finally:
        local.stop()


def wait_until(condition, what: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)  # re-check the condition; bounded by ``timeout``
    return False


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
        assert wait_until(lambda: js.received("lp", topic), "the first delivery", 10)

        js.hold()  # the client's next poll waits, no request in flight
        cluster.kill_node(ws_a.name)
        cluster.start_node(ws_a.name)
        before = js.requests()
        js.release()

        heard, number, deadline = False, 1, time.monotonic() + RECOVERY_S
        while not heard and time.monotonic() < deadline:
            js.publish("pub", topic, count=1, start=number)
            heard = wait_until(lambda n=number: any(
                body == {"n": n} for _, body in js.received("lp", topic)), "a delivery",
                DELIVERY_S)
            number += 1
        after = js.requests()
    gets = after["GET"] - before["GET"]
    assert heard, f"{version}: deaf after the restart ({gets} GETs, {after})"
    assert after["undefinedToken"] == 0, after
    assert gets < MAX_GETS, f"{version}: {gets} GETs to recover"
    print(f"{version}: recovered after {gets} GETs, {after['POST'] - before['POST']} POSTs")
