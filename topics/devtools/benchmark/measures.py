"""What the benchmark measures on the server side, and how latency histograms merge.

- CPU: user+system seconds of every server process (and its children), by pid, via psutil.
- Wake-ups: voluntary context switches of the same processes (a process that sleeps in
  ``epoll_wait`` and is woken by a message counts one): what a publish costs in process
  wake-ups, whose own price on this machine ``topics.devtools.benchmark.floor`` measures.
- RSS: resident memory of the WS processes.
- Redis: ``INFO commandstats`` (calls per command, the INFO calls themselves excluded) and
  ``INFO stats`` (total_net_input_bytes / total_net_output_bytes) summed over every Redis.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping

import psutil
import redis

from topics.devtools.benchmark.loadgen import LATENCY_BUCKET_S


def _tree(pids: Iterable[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs.append(proc)
            procs.extend(proc.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return procs


class CpuMeter:
    """CPU seconds of a fixed set of process trees, by role (the set is taken when it is
    created): the total is the figure; the split shows which process pays."""

    def __init__(self, pids_by_role: Mapping[str, Iterable[int]]) -> None:
        self.role_of: dict[int, str] = {}
        self.procs = []
        for role, pids in pids_by_role.items():
            for proc in _tree(pids):
                self.role_of[proc.pid] = role
                self.procs.append(proc)

    def snapshot(self) -> dict[int, float]:
        seconds = {}
        for proc in self.procs:
            try:
                t = proc.cpu_times()
                seconds[proc.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return seconds

    def wakeups(self) -> dict[int, int]:
        """Voluntary context switches of each process, summed over all its threads (psutil's
        ``num_ctx_switches`` reads the main thread's alone)."""
        counts = {}
        for proc in self.procs:
            total = 0
            try:
                for task in os.scandir(f"/proc/{proc.pid}/task"):
                    with contextlib.suppress(OSError), open(f"{task.path}/status") as status:
                        for line in status:
                            if line.startswith("voluntary_ctxt_switches:"):
                                total += int(line.split()[1])
                                break
            except OSError:
                continue  # the process is gone
            counts[proc.pid] = total
        return counts

    @staticmethod
    def delta(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(after[pid] - before.get(pid, 0.0) for pid in after)

    def delta_by_role(self, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
        roles: dict[str, float] = {}
        for pid, seconds in after.items():
            role = self.role_of[pid]
            roles[role] = roles.get(role, 0.0) + seconds - before.get(pid, 0.0)
        return roles


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for proc in _tree(pids):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class RedisMeter:
    def __init__(self, urls: Iterable[str]) -> None:
        self.clients = [redis.Redis.from_url(u, socket_timeout=5) for u in urls]

    def snapshot(self) -> dict:
        calls: dict[str, int] = {}
        net_in = net_out = 0
        for client in self.clients:
            for name, stat in client.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                if command == "info":
                    continue
                calls[command] = calls.get(command, 0) + int(stat["calls"])
            stats = client.info("stats")
            net_in += int(stats["total_net_input_bytes"])
            net_out += int(stats["total_net_output_bytes"])
        return {"calls": calls, "in": net_in, "out": net_out}

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        calls = {c: n - before["calls"].get(c, 0) for c, n in after["calls"].items()}
        calls = {c: n for c, n in calls.items() if n}
        return {"calls": calls, "commands": sum(calls.values()),
                "in": after["in"] - before["in"], "out": after["out"] - before["out"]}

    def overhead(self) -> dict:
        """Bytes that one snapshot itself adds (measured: two back-to-back snapshots)."""
        a = self.snapshot()
        b = self.snapshot()
        c = self.snapshot()
        d1, d2 = self.delta(a, b), self.delta(b, c)
        return {"in": min(d1["in"], d2["in"]), "out": min(d1["out"], d2["out"])}

    def close(self) -> None:
        for client in self.clients:
            client.close()


def merge_hist(hists: Iterable[dict[str, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for hist in hists:
        for bucket, count in hist.items():
            merged[int(bucket)] = merged.get(int(bucket), 0) + count
    return merged


def hist_percentile(hist: dict[int, int], q: float) -> float | None:
    """The upper edge of the bucket holding the q-quantile, in seconds."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return (bucket + 1) * LATENCY_BUCKET_S
    return (max(hist) + 1) * LATENCY_BUCKET_S
