"""CPU pinning for the capacity scenario: server processes on some cores, load on the others.

``os.sched_setaffinity`` sets one thread's mask, so a process is pinned by pinning every thread
in ``/proc/<pid>/task`` (threads and children started later inherit the mask), and its whole
process tree with it. What else runs on the server cores (other users of a shared machine) is
measured, not prevented: :func:`busy_seconds` reads the cores' own counters, and the servers'
CPU subtracted from it is everyone else's.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import psutil


class PinningError(ValueError):
    """A core list that cannot be used on this machine."""


def parse_cores(text: str) -> set[int]:
    """``"0"``, ``"0,2"``, ``"0-3"`` -> a set of core numbers."""
    cores: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise PinningError(f"not a core list: {text!r} (e.g. 0 or 0,1 or 0-1)") from None
        cores.update(range(first, last + 1))
    return cores


def split_cores(server_cores: set[int]) -> tuple[set[int], set[int]]:
    """(server cores, load cores): the load generators get every core this process may use
    that the servers do not."""
    usable = os.sched_getaffinity(0)
    if not server_cores or not server_cores <= usable:
        raise PinningError(f"server cores {sorted(server_cores)} are not among this process's "
                           f"cores {sorted(usable)}")
    load = usable - server_cores
    if not load:
        raise PinningError(f"no core left for the load generators (usable: {sorted(usable)})")
    return set(server_cores), load


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            procs.append(proc)
            procs.extend(proc.children(recursive=True))
    return procs


def pin(pids: Iterable[int], cores: set[int]) -> int:
    """Pin every thread of every process in the trees of ``pids`` to ``cores``; returns how
    many threads are pinned (a thread that ended meanwhile is skipped)."""
    pinned = 0
    for proc in _processes(pids):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cores)
                pinned += 1
    return pinned


def unpinned_threads(pids: Iterable[int], cores: set[int]) -> int:
    """Threads in the trees of ``pids`` allowed on a core outside ``cores`` (0 once pinned)."""
    count = 0
    for proc in _processes(pids):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{proc.pid}/task"):
                with contextlib.suppress(OSError):
                    if not os.sched_getaffinity(int(tid)) <= cores:
                        count += 1
    return count


def busy_seconds(cores: set[int]) -> float:
    """CPU seconds the kernel has counted as busy on ``cores``, by anyone (all but idle,
    iowait and steal, the hypervisor's; guest time is inside user time already)."""
    per_core = psutil.cpu_times(percpu=True)
    total = 0.0
    for core in cores:
        t = per_core[core]
        total += sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0) \
            - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total
