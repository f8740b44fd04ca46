"""The capacity scenario: how much load the servers of one back end carry on their own cores.

For each back end and shape a fresh cluster is started (``servers``), every server process (WS
nodes, topic servers, every Redis) is pinned to the server cores and the load generators (and
this process) to the others (``pinning``); then the publish rate rises step by step, each step
``step_seconds`` long, until a step does not hold (``capacity_report``). Per step: latency
p50/p99/max, loss, duplicates and order, server CPU per delivery (psutil over the pinned
processes), the server cores' share used by the servers and by everyone else, and the load
generators' own CPU share of their cores.

Shapes (``shapes``): ``small_rooms``, 199 rooms of 2 members, one on each WS node, 10 rooms per
socket, so 40 publishing sockets (no per-socket limit is approached); ``fanout``, 1 topic of 200
members, 2 publishers per WS node. A short unreported warm-up at the lowest rate comes first.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from topics.devtools.benchmark import capacity_report, pinning, shapes
from topics.devtools.benchmark.measures import CpuMeter
from topics.devtools.benchmark.scenarios import Bench, Run
from topics.devtools.benchmark.servers import raised_limits

CAPACITY_BACKENDS = ("dps", "redis_pubsub", "plain_redis_pubsub", "plain_redis")
CAPACITY_SHAPES = ("small_rooms", "fanout")
STEP_SECONDS = 20.0
WARMUP_SECONDS = 2.0
ROOMS, ROOMS_PER_SOCKET, FANOUT_MEMBERS = 199, 10, 200
# Publishes/s; small rooms deliver 2 per publish, fan-out 200.
ROOM_RATES = [75, 150, 300, 600, 1200, 1800, 2500, 3500, 5000, 7000, 10000]
FANOUT_RATES = [1, 2, 5, 10, 20, 40, 80, 160, 320]


def layout_of(shape: str, nodes: int) -> shapes.Layout:
    if shape == "small_rooms":
        return shapes.rooms(ROOMS, ROOMS_PER_SOCKET, nodes)
    if shape == "fanout":
        return shapes.fanout(FANOUT_MEMBERS, nodes)
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(CAPACITY_SHAPES)}")


class Capacity:
    """Runs the ladder of one back end on one shape; ``server_cores`` None: nothing pinned
    (the CPU shares are then of the whole machine)."""

    def __init__(self, bench: Bench, server_cores: set[int] | None,
                 say: Callable[[str], None]) -> None:
        self.bench = bench
        self.say = say
        if server_cores is None:
            self.server_cores = self.load_cores = set(os.sched_getaffinity(0))
            self.pinned = False
        else:
            self.server_cores, self.load_cores = pinning.split_cores(server_cores)
            self.pinned = True

    def run(self, backend: str, shape: str, rates: list[float], step_seconds: float) -> dict:
        limits = raised_limits(backend)
        self.say(f"  {backend} {shape}: limits raised: "
                 + ", ".join(f"{k} {v}" for k, v in limits.items()))
        mine = os.sched_getaffinity(0)
        if self.pinned:
            os.sched_setaffinity(0, self.load_cores)  # this process beside the generators
        run = self.bench.open_run(backend)
        try:
            layout = layout_of(shape, len(run.gens))
            threads = self._pin(run)
            self.bench.connect(run, layout.sockets)
            self.bench.join(run, layout.joins)
            per_publish = layout.deliveries_per_publish()
            _, previous = self.bench.step(run, rates[0], WARMUP_SECONDS, layout.publishers, {})
            generators = CpuMeter({"loadgen": [g.pid for g in run.gens]})
            steps: list[dict] = []
            for rate in rates:
                self._pin(run)  # threads started since (a thread pool growing) included
                gen_before, busy_before = generators.snapshot(), self._busy()
                step, previous = self.bench.step(run, rate, step_seconds, layout.publishers,
                                                 previous)
                loadgen_s = CpuMeter.delta(gen_before, generators.snapshot())
                busy = self._busy() - busy_before
                step.update(self._shares(step, loadgen_s, busy, per_publish))
                step["held"] = not capacity_report.why_not_held(step)
                steps.append(step)
                self.say(capacity_report.step_line(backend, shape, step))
                if not step["held"]:
                    break
            return {"shape": shape, "members": layout.members, "sockets": sum(layout.sockets),
                    "publishers": sum(len(p) for p in layout.publishers),
                    "deliveries_per_publish": per_publish, "step_seconds": step_seconds,
                    "pinned": self.pinned, "server_cores": sorted(self.server_cores),
                    "load_cores": sorted(self.load_cores), "server_threads_pinned": threads,
                    "limits": limits, "steps": steps,
                    "capacity": capacity_report.capacity(steps)}
        finally:
            self.bench.close_run(run)
            os.sched_setaffinity(0, mine)

    def _pin(self, run: Run) -> int:
        if not self.pinned:
            return 0
        servers = [pid for pids in run.servers.server_pids().values() for pid in pids]
        threads = pinning.pin(servers, self.server_cores)
        pinning.pin([g.pid for g in run.gens], self.load_cores)
        stray = pinning.unpinned_threads(servers, self.server_cores)
        if stray:
            raise pinning.PinningError(f"{stray} server threads could not be pinned")
        return threads

    def _busy(self) -> float:
        return pinning.busy_seconds(self.server_cores) if self.pinned else 0.0

    def _shares(self, step: dict, loadgen_s: float, busy_s: float, per_publish: float) -> dict:
        seconds = step["seconds"]
        servers = step["cpu_s"] / seconds / len(self.server_cores)
        deliveries = step["deliveries"]
        return {
            "offered_deliveries_per_s": step["rate"] * per_publish,
            "server_core_share": servers,
            # Busy time on the server cores that is not the servers': other processes of a
            # shared machine (None unpinned: the servers share every core with everyone).
            "others_on_server_cores": (max(0.0, busy_s - step["cpu_s"]) / seconds
                                       / len(self.server_cores)) if self.pinned else None,
            "loadgen_cpu_s": loadgen_s,
            "loadgen_core_share": loadgen_s / seconds / len(self.load_cores),
            "loadgen_us_per_delivery": loadgen_s * 1e6 / deliveries if deliveries else None,
        }
