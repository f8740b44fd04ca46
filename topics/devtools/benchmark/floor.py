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
import resource
import selectors
import socket
import time

MESSAGE = b"x" * 200


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    """CPU µs per hop between two sleeping processes (a hop: one message, one wake-up).

    The echoing child's CPU is its whole life's (``wait4``'s usage: its connect, then only the
    hops); this side's is taken around the round trips, less its pauses' own timer wake-ups."""
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
        before = _own_cpu_seconds()
        for _ in range(round_trips):
            conn.sendall(MESSAGE)
            received = 0
            while received < len(MESSAGE):
                selector.select()
                received += len(conn.recv(65536))
            time.sleep(pause)
        own = _own_cpu_seconds() - before - pause_cost * round_trips
        seconds = time.monotonic() - started
    finally:
        conn.close()
        _, _, usage = os.wait4(child, 0)
    per_hop = (own + usage.ru_utime + usage.ru_stime) / (2 * round_trips)
    return {"round_trips": round_trips, "seconds": seconds,
            "us_per_wakeup": max(per_hop, 0.0) * 1e6,
            "us_per_timer_wakeup": pause_cost * 1e6}


def _pause_cost(count: int, pause: float) -> float:
    """CPU seconds of one ``time.sleep(pause)`` wake-up of this process."""
    before = _own_cpu_seconds()
    for _ in range(count):
        time.sleep(pause)
    return (_own_cpu_seconds() - before) / count
