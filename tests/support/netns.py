"""Hosts for multi-host tests: each an ``ip netns`` namespace joined to the others by a bridge.

    with NetnsLab() as lab:
        ts = lab.host("ts-a")              # a namespace with eth0 = 10.<n>.0.1/24 and its lo
        ws = lab.host("ws-a")
        redis = ts.start_redis()           # redis://10.<n>.0.1:6400/0, reachable from ws
        proc = ws.popen([sys.executable, "-m", "daphne", ...])
        lab.cut(ws, ts)                    # packets between the two are silently dropped
        lab.heal(ws, ts)

Layout: a hub namespace holds a bridge; each host gets a veth pair, one end (``eth0``) in the
host's namespace, the other on the bridge. Every address lives inside namespaces the lab
created (nothing is added to the machine's own network), and names carry this process's pid so
that concurrent test runs never collide. A cut is a pair of blackhole routes (each side drops
what it sends to the other: no error, no RST, just silence, as a failed switch port looks).
:meth:`NetnsLab.close` kills every process started in the lab's namespaces and deletes them,
even when the test failed; it runs from the context manager and from ``atexit``.
"""
from __future__ import annotations

import atexit
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

REDIS_PORT = 6400


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsHost:
    """One namespace: a node's "machine" with one address on the lab's network."""

    def __init__(self, lab: NetnsLab, name: str, namespace: str, address: str) -> None:
        self.lab = lab
        self.name = name
        self.namespace = namespace
        self.address = address

    def popen(self, command: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``command`` inside this host's namespace (own session, so it can be killed
        with everything it starts)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespace, *command],
                                start_new_session=True, **kwargs)
        self.lab.processes.append(proc)
        return proc

    def run(self, command: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.namespace, *command],
                              capture_output=True, text=True, timeout=timeout)

    def can_connect(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from this host to ``address:port`` opens within timeout."""
        probe = (f"import socket; socket.create_connection(({address!r}, {port}), "
                 f"timeout={timeout}).close()")
        return self.run([sys.executable, "-c", probe], timeout=timeout + 10).returncode == 0

    def start_redis(self, binary: str, port: int = REDIS_PORT, timeout: float = 10) -> str:
        """A private redis-server on this host's address (and its loopback), reachable from
        the other hosts with a random password (as a production Redis is); its URL."""
        password = secrets.token_hex(12)
        self.popen([binary, "--port", str(port), "--bind", self.address, "127.0.0.1",
                    "--requirepass", password, "--save", "", "--appendonly", "no",
                    "--daemonize", "no", "--dir", self.lab.workdir],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.can_connect(self.address, port, 0.5):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis on {self.name} did not start")
            time.sleep(0.05)  # a bounded poll of the port, until the deadline
        return f"redis://:{password}@{self.address}:{port}/0"


class NetnsLab:
    def __init__(self, workdir: str = "/tmp") -> None:
        tag = f"dps{os.getpid() % 100000}"
        self.prefix = tag
        self.subnet = f"10.{os.getpid() % 200 + 20}.{os.getpid() // 200 % 250}"
        self.hub = f"{tag}-hub"
        self.workdir = workdir
        self.hosts: dict[str, NetnsHost] = {}
        self.processes: list[subprocess.Popen] = []
        self._namespaces: list[str] = []
        self._cuts: set[tuple[str, str]] = set()
        self._closed = False

    def __enter__(self) -> Self:
        atexit.register(self.close)
        try:
            self._add_namespace(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    def host(self, name: str) -> NetnsHost:
        """A new host on the lab's network (addresses .1, .2, ... in creation order)."""
        index = len(self.hosts) + 1
        namespace = f"{self.prefix}-{name}"
        self._add_namespace(namespace)
        port = f"v{index}"
        _ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", namespace)
        _ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
        address = f"{self.subnet}.{index}"
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        host = self.hosts[name] = NetnsHost(self, name, namespace, address)
        return host

    def cut(self, a: NetnsHost, b: NetnsHost) -> None:
        """Drop every packet between ``a`` and ``b`` (both ways); other links are untouched."""
        for src, dst in ((a, b), (b, a)):
            _ip("-n", src.namespace, "route", "add", "blackhole", f"{dst.address}/32")
            self._cuts.add((src.namespace, dst.address))

    def heal(self, a: NetnsHost, b: NetnsHost) -> None:
        for src, dst in ((a, b), (b, a)):
            _ip("-n", src.namespace, "route", "del", "blackhole", f"{dst.address}/32")
            self._cuts.discard((src.namespace, dst.address))

    def close(self) -> None:
        """Kill everything started in the lab, then delete its namespaces (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self.processes):  # nodes before the Redis they use
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
        for namespace in reversed(self._namespaces):
            # Anything else still running in it (a grandchild that left its session).
            pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        atexit.unregister(self.close)
