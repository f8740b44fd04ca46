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

    def __enter__(self) -> Cluster:
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


# --- a raw WebSocket client: bytes written exactly as given -----------------------------------

def client_frame(opcode: int, payload: bytes, mask: bytes | None = None, fin: bool = True) -> bytes:
    """A masked client frame (``mask`` random unless given)."""
    mask = os.urandom(4) if mask is None else mask
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def heartbeat(ref: str, padding: int = 0) -> bytes:
    return client_frame(0x1, (f'[null,"{ref}","phoenix","heartbeat",{{}}' + " " * padding
                              + "]").encode())


class RawSocket:
    """One TCP connection after a WebSocket handshake; `events()` reads what the server sends:
    ("text", obj), ("binary", bytes), ("pong", bytes), ("close", code, reason), ("eof",),
    ("reset",)."""

    def __init__(self, url: str) -> None:
        import base64
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("closed during the handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(head.split(b"\r\n")[0].decode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, size: int, deadline: float) -> bool:
        while len(self.buffer) < size:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        return True

    def events(self, seconds: float, until=None) -> list[tuple]:
        """What arrives within ``seconds`` (or until ``until(event)`` is true, or the end)."""
        found: list[tuple] = []
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                self._fill(2, deadline)
                first, second = self.buffer[0], self.buffer[1]
                size, offset = second & 0x7F, 2
                if size == 126:
                    self._fill(4, deadline)
                    size, offset = int.from_bytes(self.buffer[2:4], "big"), 4
                elif size == 127:
                    self._fill(10, deadline)
                    size, offset = int.from_bytes(self.buffer[2:10], "big"), 10
                self._fill(offset + size, deadline)
                payload = self.buffer[offset:offset + size]
                self.buffer = self.buffer[offset + size:]
                opcode = first & 0x0F
                if opcode == 0x1:
                    event = ("text", json.loads(payload))
                elif opcode == 0x2:
                    event = ("binary", payload)
                elif opcode == 0xA:
                    event = ("pong", payload)
                elif opcode == 0x8:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    event = ("close", code, payload[2:].decode(errors="replace"))
                else:
                    event = ("opcode", opcode)
                found.append(event)
                if event[0] == "close" or (until and until(event)):
                    break
        except TimeoutError:
            pass
        except EOFError:
            found.append(("eof",))
        except ConnectionResetError:
            found.append(("reset",))
        return found

    def close(self) -> None:
        self.sock.close()
