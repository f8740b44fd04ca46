"""The scenarios, each against a fresh cluster of one back end.

Load comes from ``topics.devtools.benchmark.loadgen`` processes: one per real WS node (members of a
node connect through that node's generator). Server CPU, RSS and Redis counters are sampled
around every measured phase (see ``metrics``).
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from topics.devtools.benchmark import shapes
from topics.devtools.benchmark.measures import CpuMeter, RedisMeter, hist_percentile, merge_hist, rss_bytes
from topics.devtools.benchmark.servers import BenchServers, start_servers
from topics.devtools.cluster_plan import REPOSITORY_DIR

P99_LIMIT_S = 0.100
DRAIN_TIMEOUT_S = 5.0
IDLE_JOIN_CHUNK = 500


class GeneratorError(RuntimeError):
    pass


class Generator:
    """One load generator process and its line protocol (see ``loadgen``)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "topics.devtools.benchmark.loadgen"], cwd=REPOSITORY_DIR,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, cmd: str, **args: Any) -> None:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float = 300.0) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GeneratorError("load generator did not answer in time")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                    raise GeneratorError(f"load generator exited: {err}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise GeneratorError(answer["error"])
        return answer

    def call(self, cmd: str, timeout: float = 300.0, **args: Any) -> dict:
        self.send(cmd, **args)
        return self.reply(timeout)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("close")
                self.reply(10)
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def all_call(gens: list[Generator], cmds: list[tuple[str, dict]], timeout: float = 300.0
             ) -> list[dict]:
    """Send each generator its command, then wait for all: they run concurrently."""
    for gen, (cmd, args) in zip(gens, cmds, strict=True):
        gen.send(cmd, **args)
    return [gen.reply(timeout) for gen in gens]


@dataclass
class Run:
    """One back end's cluster plus one generator per real WS node, and the meters."""

    servers: BenchServers
    gens: list[Generator]
    cpu: CpuMeter
    redis: RedisMeter | None
    ws_pids: list[int]
    redis_overhead: dict = field(default_factory=lambda: {"in": 0, "out": 0})

    def sample(self) -> dict:
        return {"t": time.monotonic(), "cpu": self.cpu.snapshot(),
                "wakeups": self.cpu.wakeups(),
                "redis": self.redis.snapshot() if self.redis else None}

    def measure(self, before: dict, after: dict) -> dict:
        out = {"seconds": after["t"] - before["t"],
               "cpu_s": CpuMeter.delta(before["cpu"], after["cpu"]),
               "cpu_s_by_role": self.cpu.delta_by_role(before["cpu"], after["cpu"]),
               "wakeups_by_role": self.cpu.delta_by_role(before["wakeups"], after["wakeups"])}
        if self.redis:
            delta = RedisMeter.delta(before["redis"], after["redis"])
            delta["in"] = max(0, delta["in"] - self.redis_overhead["in"])
            delta["out"] = max(0, delta["out"] - self.redis_overhead["out"])
            out["redis"] = delta
        return out


class Bench:
    def __init__(self, server: str, say: Callable[[str], None], log: IO[str] | None) -> None:
        self.server = server
        self.say = say
        self.log = log

    def open_run(self, backend: str, standins: int = 0) -> Run:
        servers = start_servers(backend, self.server, standins=standins, log=self.log,
                                emit=self.say)
        try:
            gens = [Generator() for _ in servers.ws_urls]
            pids = servers.server_pids()
            meter = RedisMeter(servers.redis_urls) if servers.redis_urls else None
            run = Run(servers, gens, CpuMeter(pids), meter, pids["ws"])
            if meter:
                run.redis_overhead = meter.overhead()
            return run
        except BaseException:
            servers.stop()
            raise

    @staticmethod
    def close_run(run: Run) -> None:
        for gen in run.gens:
            gen.stop()
        if run.redis:
            run.redis.close()
        run.servers.stop()

    # ----------------------------------------------------------------------- building blocks
    def connect(self, run: Run, sockets_per_gen: list[int]) -> dict:
        rss0 = rss_bytes(run.ws_pids)
        replies = all_call(run.gens, [("open", {"url": url, "sockets": n}) for url, n in
                                      zip(run.servers.ws_urls, sockets_per_gen, strict=True)])
        return {"rss0": rss0, "sockets": sum(sockets_per_gen),
                "reconnects": sum(r.get("reconnects", 0) for r in replies),
                "seconds": max(r["seconds"] for r in replies)}

    def join(self, run: Run, joins_per_gen: list[list]) -> list[dict]:
        replies = all_call(run.gens, [("join", {"joins": j}) for j in joins_per_gen])
        for reply in replies:
            if reply["errors"] or reply["timed_out"]:
                raise GeneratorError(f"joins failed: {reply['errors']} errors, "
                                     f"timed out: {reply['timed_out']}, {reply['error_samples']}")
        return replies

    def idle_rates(self, run: Run, seconds: float) -> dict | None:
        """Redis commands per second with members joined and nothing published."""
        if run.redis is None:
            return None
        time.sleep(0.5)
        before = run.sample()
        time.sleep(seconds)
        after = run.sample()
        measured = run.measure(before, after)["redis"]
        span = after["t"] - before["t"]
        return {"seconds": span,
                "calls_per_s": {c: n / span for c, n in measured["calls"].items()},
                "commands_per_s": measured["commands"] / span,
                "bytes_per_s": (measured["in"] + measured["out"]) / span}

    def step(self, run: Run, rate: float, duration: float, pubs_per_gen: list[list],
              previous: dict[str, dict[str, int]], idle: dict | None = None) -> tuple[dict, dict]:
        """Publish at ``rate`` (total) for ``duration``; wait for delivery; measure."""
        active = [i for i, pubs in enumerate(pubs_per_gen) if pubs]
        per_gen = rate / len(active)
        before = run.sample()
        t0 = time.time()
        pub_replies = all_call(
            [run.gens[i] for i in active],
            [("publish", {"rate": per_gen, "duration": duration, "publishers": pubs_per_gen[i]})
             for i in active])
        expected: dict[str, dict[str, int]] = {}
        for reply in pub_replies:
            for topic, pubs in reply["expected"].items():
                expected.setdefault(topic, {}).update(pubs)
        collected = all_call(run.gens, [("collect", {"expected": expected, "previous": previous,
                                                     "timeout": DRAIN_TIMEOUT_S})] * len(run.gens),
                             timeout=DRAIN_TIMEOUT_S + 60)
        after = run.sample()
        measured = run.measure(before, after)
        published = sum(r["sent"] for r in pub_replies)
        pub_seconds = max(r["seconds"] for r in pub_replies)
        hist = merge_hist(c["hist"] for c in collected)
        deliveries = sum(c["deliveries"] for c in collected)
        last_rx = max((c["last_rx"] for c in collected if c["last_rx"]), default=t0 + pub_seconds)
        window = max(pub_seconds, last_rx - t0)
        order_violations = 0
        topics: dict[str, dict[str, int]] = {}
        for c in collected:
            for topic, hashes in c["hashes"].items():
                per = topics.setdefault(topic, {})
                for h, n in hashes.items():
                    per[h] = per.get(h, 0) + n
        for per in topics.values():
            order_violations += sum(per.values()) - max(per.values())
        result = {
            "rate": rate, "published": published, "publish_rate": published / pub_seconds,
            "deliveries": deliveries,
            "expected_deliveries": sum(c["expected_deliveries"] for c in collected),
            "delivered_per_s": deliveries / window if window else 0.0,
            "p50_ms": _ms(hist_percentile(hist, 0.50)), "p99_ms": _ms(hist_percentile(hist, 0.99)),
            "max_ms": _ms(max((c["lat_max"] for c in collected), default=0.0)),
            "lost": sum(c["lost"] for c in collected), "dups": sum(c["dups"] for c in collected),
            "reorders": sum(c["reorders"] for c in collected),
            "order_violations": order_violations,
            "publish_errors": sum(c["pub_err"] for c in collected),
            "publish_error_samples": [s for c in collected for s in c["pub_err_samples"]][:3],
            "closed_sockets": sum(c["closed_sockets"] for c in collected),
            "cpu_s": measured["cpu_s"], "seconds": measured["seconds"],
            "cpu_us_per_delivery": (measured["cpu_s"] * 1e6 / deliveries) if deliveries else None,
            "cpu_us_per_delivery_by_role": {
                role: s * 1e6 / deliveries for role, s in measured["cpu_s_by_role"].items()
                if deliveries},
            "cpu_us_per_publish": (measured["cpu_s"] * 1e6 / published) if published else None,
            "cpu_us_per_publish_by_role": {
                role: s * 1e6 / published for role, s in measured["cpu_s_by_role"].items()
                if published},
            # Rates over the measured window (publishing plus the drain), for marginal costs.
            "cpu_per_s": measured["cpu_s"] / measured["seconds"],
            "cpu_per_s_by_role": {role: s / measured["seconds"]
                                  for role, s in measured["cpu_s_by_role"].items()},
            "published_per_s": published / measured["seconds"],
            "wakeups_per_s_by_role": {role: n / measured["seconds"]
                                      for role, n in measured["wakeups_by_role"].items()},
            "wakeups_per_publish": (sum(measured["wakeups_by_role"].values()) / published
                                    if published else None),
        }
        if "redis" in measured and published:
            r = measured["redis"]
            result["redis_commands_per_publish"] = r["commands"] / published
            result["redis_calls_per_publish"] = {c: n / published for c, n in
                                                 sorted(r["calls"].items())}
            result["redis_bytes_per_publish"] = (r["in"] + r["out"]) / published
            if idle is not None:
                # What the publishes cost beyond the cluster's idle traffic (heartbeats, the
                # readers' blocking reads) over the same time.
                span = measured["seconds"]
                calls = {c: (n - idle["calls_per_s"].get(c, 0.0) * span) / published
                         for c, n in r["calls"].items()}
                result["marginal_calls_per_publish"] = {c: v for c, v in sorted(calls.items())
                                                        if abs(v) >= 0.005}
                result["marginal_commands_per_publish"] = (
                    r["commands"] - idle["commands_per_s"] * span) / published
                result["marginal_bytes_per_publish"] = (
                    r["in"] + r["out"] - idle["bytes_per_s"] * span) / published
        return result, expected

    # ------------------------------------------------------------------------------ scenarios
    def fanout(self, backend: str, members: int, rates: list[float], duration: float,
               stop_at_limit: bool = True, cpu_rate: float = 0.0,
               cpu_duration: float = 10.0) -> dict:
        """The rate ladder, then (with ``cpu_rate``) one longer step at that same rate for
        every back end: the CPU comparison, with less noise than a short ladder step."""
        run = self.open_run(backend)
        try:
            n = len(run.gens)
            layout = shapes.fanout(members, n)
            conn = self.connect(run, layout.sockets)
            self.join(run, layout.joins)
            rss = rss_bytes(run.ws_pids)
            idle = self.idle_rates(run, min(duration, 2.0))
            pubs = layout.publishers
            steps = []
            previous: dict[str, dict[str, int]] = {}
            for rate in rates:
                step, previous = self.step(run, rate, duration, pubs, previous, idle)
                step["ok"] = _step_ok(step)
                steps.append(step)
                self.say(_step_line(backend, "fanout", step))
                if not step["ok"] and stop_at_limit:
                    break
            reference = None
            if cpu_rate:
                reference, previous = self.step(run, cpu_rate, cpu_duration, pubs, previous,
                                                 idle)
                reference["ok"] = _step_ok(reference)
                self.say(_step_line(backend, "cpu ref", reference))
            passing = [s["rate"] for s in steps if s["ok"]]
            return {"members": members, "ws_nodes": n, "steps": steps, "idle_redis": idle,
                    "cpu_reference": reference,
                    "max_ok_rate": max(passing) if passing else 0.0,
                    "rss_per_connection": (rss - conn["rss0"]) / conn["sockets"]}
        finally:
            self.close_run(run)

    def many_topics(self, backend: str, topics: int, rates: list[float], duration: float,
                    per_socket: int = 10) -> dict:
        """Small topics: each has one member on each WS node (two on the one node of
        ``local``), and its publisher is on one of them, alternately, so publishes come in on
        both nodes. One step per rate on the same cluster; the marginal cost per publish is
        the CPU difference between the lowest and highest rate over their publish-rate
        difference, so the cluster's idle cost does not hide in it. ``per_socket``: topics
        joined on one socket (1: a socket per member, the issue's 398 sockets on 199 topics)."""
        run = self.open_run(backend)
        try:
            layout = shapes.rooms(topics, per_socket, len(run.gens))
            conn = self.connect(run, layout.sockets)
            pubs = layout.publishers
            self.join(run, layout.joins)
            rss = rss_bytes(run.ws_pids)
            steps = []
            previous: dict[str, dict[str, int]] = {}
            for rate in rates:
                step, previous = self.step(run, rate, duration, pubs, previous)
                step["ok"] = _step_ok(step)
                steps.append(step)
                self.say(_step_line(backend, "many_topics", step))
            return {"topics": topics, "members": topics * 2, "sockets": conn["sockets"],
                    "rss_per_connection": (rss - conn["rss0"]) / conn["sockets"],
                    "steps": steps, "marginal": marginal_cost(steps)}
        finally:
            self.close_run(run)

    def idle(self, backend: str, sockets: int, topics: int, duration: float) -> dict:
        """``sockets`` idle sockets on ONE WS node, joined to ``topics`` topics, sending only
        Phoenix heartbeats (every 30 s each, on their own phases): the CPU that node (and
        the rest of the cluster) spends while nothing is published."""
        run = self.open_run(backend)
        try:
            counts = [sockets] + [0] * (len(run.gens) - 1)
            conn = self.connect(run, counts)
            # In chunks: the setup, not a join storm (each join waits for its owner's
            # confirmation at most confirm_timeout, 5 s, which a busy machine can miss).
            for start in range(0, sockets, IDLE_JOIN_CHUNK):
                self.join(run, [[[s, f"topics:idle{s % topics}"] for s in
                                  range(start, min(start + IDLE_JOIN_CHUNK, sockets))]]
                           + [[] for _ in counts[1:]])
            loaded = CpuMeter({"ws": run.ws_pids[:1]})
            time.sleep(2.0)  # the joins' aftermath (confirmations, stats of the new topics)
            before, node_before = run.sample(), loaded.snapshot()
            node_wakeups_before = loaded.wakeups()
            time.sleep(duration)
            after, node_after = run.sample(), loaded.snapshot()
            node_wakeups = CpuMeter.delta(node_wakeups_before, loaded.wakeups())
            measured = run.measure(before, after)
            seconds = measured["seconds"]
            node_share = CpuMeter.delta(node_before, node_after) / seconds
            result = {"sockets": conn["sockets"], "topics": topics, "seconds": seconds,
                      "connect_seconds": conn["seconds"],
                      "reconnects": conn["reconnects"],
                      "ws_node_core_share": node_share,
                      "ws_node_wakeups_per_s": node_wakeups / seconds,
                      "all_servers_core_share": measured["cpu_s"] / seconds,
                      "core_share_by_role": {role: s / seconds for role, s in
                                             measured["cpu_s_by_role"].items()},
                      "rss_per_connection": (rss_bytes(run.ws_pids) - conn["rss0"]) / sockets}
            if "redis" in measured:
                result["redis_commands_per_s"] = measured["redis"]["commands"] / seconds
            self.say(f"  {backend:13s} idle: {sockets} sockets on {topics} topics: the WS node "
                     f"{node_share * 100:.2f}% of a core ({result['ws_node_wakeups_per_s']:.0f} "
                     f"wake-ups/s), all servers {result['all_servers_core_share'] * 100:.2f}%")
            return result
        finally:
            self.close_run(run)

    def join_storm(self, backend: str, sockets: int, per_socket: int, topics: int) -> dict:
        run = self.open_run(backend)
        try:
            n = len(run.gens)
            counts = [sockets // n + (1 if i < sockets % n else 0) for i in range(n)]
            conn = self.connect(run, counts)
            joins: list[list] = []
            base = 0
            for k in counts:
                joins.append([[s, f"topics:js{((base + s) * per_socket + j) % topics}"]
                              for s in range(k) for j in range(per_socket)])
                base += k
            before = run.sample()
            replies = self.join(run, joins)
            after = run.sample()
            measured = run.measure(before, after)
            rss = rss_bytes(run.ws_pids)
            total = sum(r["joins"] for r in replies)
            seconds = max(r["seconds"] for r in replies)
            # Percentiles of the generators' own percentiles would be wrong: take the worst p99
            # and the median of medians (2 generators at most, both equally loaded).
            p50 = sorted(r["latencies"]["p50"] for r in replies)[len(replies) // 2]
            p99 = max(r["latencies"]["p99"] for r in replies)
            result = {"joins": total, "sockets": conn["sockets"], "topics": topics,
                      "seconds": seconds, "joins_per_s": total / seconds,
                      "p50_ms": _ms(p50), "p99_ms": _ms(p99),
                      "max_ms": _ms(max(r["latencies"]["max"] for r in replies)),
                      "cpu_s": measured["cpu_s"],
                      "cpu_us_per_join": measured["cpu_s"] * 1e6 / total,
                      "rss_per_connection": (rss - conn["rss0"]) / conn["sockets"]}
            if "redis" in measured:
                result["redis_commands_per_join"] = measured["redis"]["commands"] / total
            self.say(f"  {backend:13s} join_storm: {total} joins in {seconds:.2f}s = "
                     f"{result['joins_per_s']:.0f}/s, p50 {result['p50_ms']:.1f} ms, "
                     f"p99 {result['p99_ms']:.1f} ms")
            return result
        finally:
            self.close_run(run)

    def node_scale(self, backend: str, sizes: list[int], members: int, rate: float,
                   duration: float) -> dict:
        points = []
        for size in sizes:
            run = self.open_run(backend, standins=size - 2)
            try:
                self.connect(run, [members // 2, members // 2])
                topic = "topics:scale"
                self.join(run, [[[s, topic] for s in range(members // 2)]] * 2)
                idle = self.idle_rates(run, duration)
                pubs = [[[0, topic, 1]], [[0, topic, 1001]]]
                busy, _ = self.step(run, rate, duration, pubs, {}, idle)
                point = {
                    "ws_nodes": size, "ws_nodes_with_members": 2, "published": busy["published"],
                    "commands_per_publish": busy["redis_commands_per_publish"],
                    "bytes_per_publish": busy["redis_bytes_per_publish"],
                    "idle_commands_per_s": idle["commands_per_s"],
                    "marginal_commands_per_publish": busy["marginal_commands_per_publish"],
                    "marginal_bytes_per_publish": busy["marginal_bytes_per_publish"],
                    "marginal_calls_per_publish": {
                        c: round(v, 3) for c, v in busy["marginal_calls_per_publish"].items()},
                    "lost": busy["lost"], "dups": busy["dups"],
                    "order_violations": busy["order_violations"],
                }
                points.append(point)
                self.say(f"  {backend:13s} node_scale {size:2d} WS nodes: "
                         f"{point['commands_per_publish']:.2f} cmds/publish "
                         f"(marginal {point['marginal_commands_per_publish']:.2f}), "
                         f"{point['bytes_per_publish']:.0f} B/publish")
            finally:
                self.close_run(run)
        return {"members": members, "rate": rate, "points": points}


def marginal_cost(steps: list[dict]) -> dict | None:
    """Server CPU per extra publish between the lowest and the highest rate (both steps clean:
    every message delivered once, in order), in total and by role."""
    clean = [s for s in steps if not (s["lost"] or s["dups"] or s["reorders"]
                                      or s["order_violations"] or s["publish_errors"])]
    if len(clean) < 2:
        return None
    low, high = min(clean, key=lambda s: s["rate"]), max(clean, key=lambda s: s["rate"])
    extra = high["published_per_s"] - low["published_per_s"]
    if extra <= 0:
        return None
    marginal = {"from_rate": low["rate"], "to_rate": high["rate"],
                "cpu_us_per_publish": (high["cpu_per_s"] - low["cpu_per_s"]) * 1e6 / extra,
                "cpu_us_per_publish_by_role": {
                    role: (high["cpu_per_s_by_role"].get(role, 0.0) - cpu) * 1e6 / extra
                    for role, cpu in low["cpu_per_s_by_role"].items()}}
    if "wakeups_per_s_by_role" in low and "wakeups_per_s_by_role" in high:
        by_role = {role: (high["wakeups_per_s_by_role"].get(role, 0.0) - n) / extra
                   for role, n in low["wakeups_per_s_by_role"].items()}
        marginal["wakeups_per_publish"] = sum(by_role.values())
        marginal["wakeups_per_publish_by_role"] = by_role
    return marginal


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _step_ok(step: dict) -> bool:
    return (step["p99_ms"] is not None and step["p99_ms"] <= P99_LIMIT_S * 1000
            and not step["lost"] and not step["dups"] and not step["order_violations"]
            and not step["reorders"] and not step["publish_errors"])


def _step_line(backend: str, scenario: str, step: dict) -> str:
    cpu = step["cpu_us_per_delivery"]
    return (f"  {backend:13s} {scenario} {step['rate']:>6.0f} msg/s: delivered "
            f"{step['delivered_per_s']:>8.0f}/s p50 {_fmt(step['p50_ms'])} p99 "
            f"{_fmt(step['p99_ms'])} max {_fmt(step['max_ms'])} ms, cpu "
            f"{_fmt(cpu)} us/delivery {_fmt(step['cpu_us_per_publish'])} us/publish, "
            f"lost {step['lost']} dup {step['dups']} "
            f"order {step['order_violations']}+{step['reorders']}"
            + ("" if step.get("ok", True) else "  <- limit"))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
