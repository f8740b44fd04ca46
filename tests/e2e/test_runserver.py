"""`manage.py runserver` alone: one process, an in-process topic server, no Redis."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest
import websockets

from tests.support.processes import ROOT
from tests.support.waiting import wait_until
from topics.devtools.embedded_redis import free_port

pytestmark = pytest.mark.e2e


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"runserver exited: {proc.stdout.read()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout, "runserver to listen", interval=0.1)


async def recv(ws) -> list:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


def test_runserver_serves_the_phoenix_socket_without_redis(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPS_")}
    env["DPS_DATABASE"] = str(tmp_path / "db.sqlite3")
    # A PATH without redis-server proves nothing here needs one.
    env["PATH"] = os.path.dirname(sys.executable)
    proc = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}",
                             "--noreload"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, proc)

        async def session() -> None:
            url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
            async with websockets.connect(url) as a, websockets.connect(url) as b:
                await a.send(json.dumps(["1", "1", "topics:matrix", "phx_join", {}]))
                assert (await recv(a))[3:] == ["phx_reply", {"status": "ok", "response": {}}]
                await b.send(json.dumps(["9", "1", "topics:matrix", "phx_join", {}]))
                assert (await recv(b))[4]["status"] == "ok"
                await b.send(json.dumps(
                    ["9", "2", "topics:matrix", "publish", ["event", {"message": "hi"}]]))
                assert await recv(b) == ["9", "2", "topics:matrix", "phx_reply",
                                         {"status": "ok", "response": {}}]
                assert await recv(b) == ["9", None, "topics:matrix", "event", {"message": "hi"}]
                assert await recv(a) == ["1", None, "topics:matrix", "event", {"message": "hi"}]

        asyncio.run(session())
    finally:
        proc.terminate()
        proc.wait(10)
