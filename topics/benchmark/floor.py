"""What one process wake-up costs on this machine: the floor under any multi-process design.

At the rates of ``many_topics`` (100–300 publishes a second), every process a publish passes
through is asleep in ``epoll_wait`` when the message reaches it, so each hop costs a wake-up
(the kernel's scheduling, the loopback TCP send and receive, the return from ``epoll_wait``)
before any Python runs. This measures that price with no Python work around it: two processes
bounce a 200-byte message over loopback TCP, each blocked in ``epoll_wait`` between messages,
with a pause between round trips so that both sides sleep as they do at those rates. The CPU
of both processes over the number of hops is the cost of one wake-up plus its message.

Multiplied by the wake-ups a publish causes (``wakeups_per_publish``, counted by the benchmark
from every server process's voluntary context switches), it gives the CPU a publish costs
before any of its work is done.
"""
from __future__ import annotations

import os
import selectors
import socket
import time

MESSAGE = b"x" * 200


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _echo(port: int) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    selector = selectors.EpollSelector()
    selector.register(conn, selectors.EVENT_READ)
    while True:
        selector.select()
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def wakeup_cost(round_trips: int = 2000, pause: float = 0.003) -> dict:
    """CPU µs per hop between two sleeping processes (a hop: one message, one wake-up)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    child = os.fork()
    if child == 0:
        try:
            _echo(listener.getsockname()[1])
        finally:
            os._exit(0)
    conn, _ = listener.accept()
    listener.close()
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        selector = selectors.EpollSelector()
        selector.register(conn, selectors.EVENT_READ)
        pause_cost = _pause_cost(round_trips // 4, pause)
        started = time.monotonic()
        before = _cpu_seconds(child) + _cpu_seconds(os.getpid())
        for _ in range(round_trips):
            conn.sendall(MESSAGE)
            received = 0
            while received < len(MESSAGE):
                selector.select()
                received += len(conn.recv(65536))
            time.sleep(pause)
        after = _cpu_seconds(child) + _cpu_seconds(os.getpid())
        seconds = time.monotonic() - started
    finally:
        conn.close()
        os.waitpid(child, 0)
    # The pause's own wake-up (the measuring side's timer) is not a hop: taken out.
    per_hop = ((after - before) - pause_cost * round_trips) / (2 * round_trips)
    return {"round_trips": round_trips, "seconds": seconds,
            "us_per_wakeup": max(per_hop, 0.0) * 1e6,
            "us_per_timer_wakeup": pause_cost * 1e6}


def _pause_cost(count: int, pause: float) -> float:
    """CPU seconds of one ``time.sleep(pause)`` wake-up of this process."""
    before = _cpu_seconds(os.getpid())
    for _ in range(count):
        time.sleep(pause)
    return (_cpu_seconds(os.getpid()) - before) / count
