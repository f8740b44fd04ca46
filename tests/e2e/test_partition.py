"""Across hosts: every node and its Redis in its own network namespace; the link between one WS
node and one topic server is cut for 10 s, then restored."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from channel_layer.ring import Ring
from channel_layer.settings import LayerSettings
from tests.support.netns import NetnsLab
from tests.support.processes import ROOT, node_env, write_cluster_file
from topics.devtools.embedded_redis import find_redis_server

pytestmark = pytest.mark.e2e
CUT_SECONDS = 10
WS_PORT = 8000


def topic_owned_by(owner: str) -> str:
    ring = Ring(["ts-a", "ts-b"])
    return next(f"part{i}" for i in range(100) if ring.owner_of(f"topics.part{i}") == owner)


def test_a_cut_link_gives_prompt_errors_then_full_recovery_without_duplicates(tmp_path):
    binary = find_redis_server()
    with NetnsLab(str(tmp_path)) as lab:
        hosts = {name: lab.host(name) for name in ("ws-a", "ts-a", "ts-b", "client")}
        urls = {name: hosts[name].start_redis(binary) for name in ("ws-a", "ts-a", "ts-b")}
        cluster_file = write_cluster_file(tmp_path, urls)
        for ts in ("ts-a", "ts-b"):
            server = hosts[ts].popen([sys.executable, "manage.py", "topic_server"], cwd=ROOT,
                                     env=node_env(cluster_file, ts), stdout=subprocess.PIPE,
                                     text=True)
            assert "serving" in server.stdout.readline()
        ws = hosts["ws-a"]
        with open(tmp_path / "ws-a.log", "w") as log:
            ws.popen([sys.executable, "-m", "daphne", "-b", ws.address, "-p", str(WS_PORT),
                      "dps_site.asgi:application"], cwd=ROOT, stdout=log, stderr=log,
                     env=node_env(cluster_file, "ws-a", DPS_ALLOW_ANONYMOUS="1"))
        deadline = time.monotonic() + 60
        while not hosts["client"].can_connect(ws.address, WS_PORT):
            assert time.monotonic() < deadline, (tmp_path / "ws-a.log").read_text()
            time.sleep(0.1)  # a bounded poll, until the deadline
        cut, steady = topic_owned_by("ts-a"), topic_owned_by("ts-b")
        client = hosts["client"].popen(
            [sys.executable, "-m", "tests.support.traffic_client",
             f"ws://{ws.address}:{WS_PORT}/socket/websocket?vsn=2.0.0", "--topics",
             f"{cut},{steady}", "--seconds", str(CUT_SECONDS + 14), "--settle", "4"],
            cwd=ROOT, env=node_env(cluster_file, None), stdout=subprocess.PIPE, text=True)
        assert json.loads(client.stdout.readline()) == {"joined": True}
        time.sleep(2)  # traffic flows before the fault
        lab.cut(ws, hosts["ts-a"])
        cut_at = time.time()
        time.sleep(CUT_SECONDS)  # the fault under test
        lab.heal(ws, hosts["ts-a"])
        healed_at = time.time()
        report = json.loads(client.stdout.read())
        assert client.wait(30) == 0

    publishes, pushes = report["publishes"], report["pushes"]
    delivered = Counter((p["topic"], p["seq"]) for p in pushes)
    assert max(delivered.values()) == 1, "a message was delivered twice"
    ok = {(p["topic"], p["seq"]) for p in publishes if p["status"] == "ok"}
    assert set(delivered) == ok, "every ok'd publish is delivered once, nothing else is"
    assert all(p["status"] is not None for p in publishes), "a publish got no reply"

    # The other topic server's topic never noticed.
    steady_topic = f"topics:{steady}"
    assert all(p["status"] == "ok" for p in publishes if p["topic"] == steady_topic)
    # During the cut: a clear error, promptly.
    timeout = LayerSettings().connect_timeout
    during = [p for p in publishes if p["topic"] == f"topics:{cut}"
              and cut_at < p["sent"] < healed_at - timeout]
    assert during and all(p["status"] == "error" for p in during)
    assert all(p["response"] == {"reason": "unavailable"} for p in during), during[:3]
    slowest = max(p["answered"] - p["sent"] for p in during)
    assert slowest <= timeout + 0.5, f"an error took {slowest:.2f}s"
    # After it: everything works again, nothing restarted.
    after = [p for p in publishes if p["topic"] == f"topics:{cut}" and p["sent"] > healed_at]
    first_ok = min(p["sent"] for p in after if p["status"] == "ok")
    assert first_ok - healed_at < 5
    assert all(p["status"] == "ok" for p in after if p["sent"] > first_ok)
    print(f"partition: errors within {slowest:.2f}s; delivering again "
          f"{first_ok - healed_at:.2f}s after the heal")
