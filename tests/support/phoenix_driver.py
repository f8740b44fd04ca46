"""Steer phoenix.js clients (``tests/interop/driver.mjs`` under Node) from a test::

    with PhoenixDriver() as js:
        js.connect("a", socket_endpoint)
        js.join("a", "rooms:lobby", {"offsets": True})
        js.presence("a", "rooms:lobby")   # {key: [phx_ref, ...]} from phoenix.js's Presence
"""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

INTEROP_DIR = Path(__file__).resolve().parents[1] / "interop"


class DriverError(RuntimeError):
    """A command failed in the driver (its message says which and why)."""


class PhoenixDriver:
    def __init__(self, timeout: float = 30.0) -> None:
        node = shutil.which("node")
        if node is None:
            raise DriverError("node is not on PATH: the phoenix.js tests need Node.js")
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._proc = subprocess.Popen(
            [node, str(INTEROP_DIR / "driver.mjs")], cwd=INTEROP_DIR, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self._lock = threading.Lock()

    def call(self, cmd: str, **arguments: Any) -> Any:
        with self._lock:
            request_id = next(self._ids)
            self._proc.stdin.write(json.dumps({"id": request_id, "cmd": cmd, **arguments}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()  # the driver answers every command in time
        if not line:
            raise DriverError(f"the driver exited: {self._proc.stderr.read()[-2000:]}")
        answer = json.loads(line)
        if answer.get("id") != request_id or not answer["ok"]:
            raise DriverError(f"{cmd} {arguments}: {answer.get('error')}")
        return answer["result"]

    def __getattr__(self, cmd: str):
        if cmd.startswith("_"):
            raise AttributeError(cmd)
        return lambda client=None, topic=None, **kw: self.call(
            cmd, **{k: v for k, v in (("client", client), ("topic", topic)) if v is not None},
            **kw)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.call("quit")
            except (DriverError, OSError, ValueError):
                pass
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
