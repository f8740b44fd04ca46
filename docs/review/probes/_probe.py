"""Shared by the issue-20 probes: a `manage.py runcluster` of the tree in the current directory
(so the same probe measures the old and the new tree), companion commands, raw WebSocket and
HTTP clients. Self-contained: it imports nothing of the tree it measures."""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path.cwd()
PY = sys.executable


def emit(figures: dict) -> None:
    figures.setdefault("tree", subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                              capture_output=True, text=True).stdout.strip())
    print(json.dumps(figures, sort_keys=False))


def free_base_port(count: int) -> int:
    for _ in range(200):
        base = random.randint(20000, 40000)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


class Cluster:
    """`manage.py runcluster --fail-fast` in its own session, output in a log file."""

    def __init__(self, *args: str, ws: int = 2, ts: int = 2, server: str = "daphne",
                 env: dict | None = None, timeout: float = 100) -> None:
        for attempt in range(3):  # a port picked free may be taken before runcluster binds it
            try:
                return self._start(args, ws, ts, server, env, timeout)
            except RuntimeError as exc:
                if "is in use" not in str(exc) or attempt == 2:
                    raise

    def _start(self, args, ws, ts, server, env, timeout) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="dps-probe-"))
        self.port = free_base_port(ws)
        self.env = {**os.environ, "XDG_STATE_HOME": str(self.work / "state"),
                    "DPS_DATABASE": str(self.work / "db.sqlite3"), **(env or {})}
        for name in ("DPS_CLUSTER", "DPS_NODE", "DJANGO_SETTINGS_MODULE"):
            self.env.pop(name, None)
        self.log_path = self.work / "runcluster.log"
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(
                [PY, "manage.py", "runcluster", "--port", str(self.port), "--ws", str(ws),
                 "--ts", str(ts), "--server", server, "--fail-fast", *args],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while "DPS cluster ready" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("runcluster did not get ready:\n" + self.log()[-3000:])
            time.sleep(0.2)
        log = self.log()
        self.cluster_file = re.search(r"cluster file: (\S+)", log).group(1)
        self.pids = {m[0]: int(m[1]) for m in re.findall(r"\] (ws-\w) started \(pid (\d+)\)", log)}
        self.ws_urls = [f"ws://127.0.0.1:{self.port + i}/socket/websocket" for i in range(ws)]
        self.http = [f"http://127.0.0.1:{self.port + i}" for i in range(ws)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def companion_env(self, **extra: str) -> dict:
        return {**self.env, "DPS_CLUSTER": self.cluster_file, "DJANGO_DEBUG": "1", **extra}

    def manage(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                              env=self.companion_env(**extra), timeout=60)

    def shell(self, code: str) -> str:
        done = self.manage("shell", "-c", code)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        return done.stdout.strip()

    def make_user(self, name: str, password: str = "probe-pass-1", staff: bool = True) -> str:
        return self.shell(
            "from django.contrib.auth import get_user_model as g; U=g(); "
            f"u=U.objects.filter(username={name!r}).first() or U(username={name!r}); "
            f"u.is_staff={staff}; u.is_superuser={staff}; u.is_active=True; "
            f"u.set_password({password!r}); u.save(); print(u.pk)")

    def token(self, name: str, **extra: str) -> str:
        done = self.manage("dps_token", name, **extra)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        return done.stdout.strip().split()[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def peak_rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+)", status.read()).group(1)) // 1024


def ws_node_pid(port: int) -> int:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))


async def ws_status(url: str, headers: dict | None = None) -> int:
    """The handshake's status: 101, or the HTTP status of the refusal."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        async with connect(url, additional_headers=headers or {}, open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def admin_session_cookie(base: str, username: str, password: str) -> str:
    """Log in at /admin/login/ and return the sessionid cookie's value."""
    import http.cookiejar
    import urllib.parse

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(base + "/admin/login/", timeout=10).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    body = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrfmiddlewaretoken": csrf, "next": "/admin/"}).encode()
    opener.open(urllib.request.Request(base + "/admin/login/", data=body,
                                       headers={"Referer": base + "/admin/login/"}),
                timeout=10).read()
    return next(c.value for c in jar if c.name == "sessionid")


def run(coro):
    return asyncio.run(coro)
