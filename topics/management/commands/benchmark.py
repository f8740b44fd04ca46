"""``python manage.py benchmark``: DPS side by side with channels_redis and an in-process baseline.

For every back end and scenario a FRESH cluster is started (see ``topics/devtools/benchmark/servers``),
loaded by one generator process per WS node (``topics/devtools/benchmark/loadgen``), and measured: the
delivered rate, delivery latency, server CPU per delivery (WS, TS and Redis processes), Redis
commands and bytes per publish, RSS per connection. Every delivery is checked: no loss, no
duplicate, one order per topic. Writes ``results.json`` and ``fanout_p99.png`` to ``--out`` and
prints a table and whether the issue's targets hold.

``--scenarios capacity`` (not in the default set) pins the servers to ``--server-cores`` and
raises the rate step by step (``--step-seconds``, ``--rates``, ``--fanout-rates``) for DPS,
RedisPubSub under DPS's consumer, and RedisPubSub and RedisChannelLayer under a plain Channels
consumer (``topics.devtools.benchmark.capacity``); it adds ``capacity_p99.png``/``.svg``.
"""
from __future__ import annotations

import platform
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from topics.devtools.benchmark import capacity_report, floor, pinning, report
from topics.devtools.benchmark.capacity import (
    CAPACITY_BACKENDS,
    CAPACITY_SHAPES,
    FANOUT_RATES,
    ROOM_RATES,
    STEP_SECONDS,
    Capacity,
)
from topics.devtools.benchmark.scenarios import Bench
from topics.devtools.benchmark.servers import BACKENDS, DEFAULT_BACKENDS, PLAIN_BACKENDS

DEFAULT_SCENARIOS = ("fanout", "many_topics", "idle", "join_storm", "node_scale")
SCENARIOS = (*DEFAULT_SCENARIOS, "capacity")
# Steps of about x1.4: fine enough to compare limits a few times apart.
FULL_RATES = [5, 7, 10, 14, 20, 28, 40, 56, 80, 110, 160, 220, 320, 450, 640, 900, 1280]


def _csv(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise CommandError(f"--{what}: choose from {', '.join(allowed)} (got {value!r})")
    return items


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Command(BaseCommand):
    help = "Benchmark DPS against channels_redis' layers and an in-process baseline."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--backends", default=None,
                            help=f"comma-separated, of {', '.join(BACKENDS)} (default: "
                                 f"{','.join(DEFAULT_BACKENDS)}; for capacity "
                                 f"{','.join(CAPACITY_BACKENDS)})")
        parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                            help=f"comma-separated, of {', '.join(SCENARIOS)} (default: all "
                                 "but capacity)")
        parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
        parser.add_argument("--duration", type=float, default=None,
                            help="seconds per measured step (default 4; 1 with --quick)")
        parser.add_argument("--out", default="bench-results")
        parser.add_argument("--quick", action="store_true",
                            help="tiny sizes: a correctness check of the harness, not a benchmark")
        parser.add_argument("--members", type=int, default=None, help="fanout members (200)")
        parser.add_argument("--rates", default=None,
                            help="publish rates, comma-separated: the fanout scenario's "
                                 "(5,7,10,14,...,1280) and capacity's small rooms' "
                                 f"({','.join(map(str, ROOM_RATES))})")
        parser.add_argument("--fanout-rates", default=None,
                            help="capacity: the fan-out shape's publish rates "
                                 f"({','.join(map(str, FANOUT_RATES))})")
        parser.add_argument("--shapes", default=",".join(CAPACITY_SHAPES),
                            help="capacity: small_rooms, fanout or both")
        parser.add_argument("--step-seconds", type=float, default=None,
                            help=f"capacity: seconds per step ({STEP_SECONDS:.0f}; 2 with "
                                 "--quick)")
        parser.add_argument("--server-cores", default="0",
                            help="capacity: the cores every server process is pinned to "
                                 "(0; e.g. 0-1); the load generators get the others. 'none': "
                                 "nothing pinned")
        parser.add_argument("--cpu-rate", type=float, default=20.0,
                            help="fanout rate of the CPU comparison step, the same for every "
                                 "back end (20 msg/s; 0: none)")
        parser.add_argument("--mt-rates", default=None,
                            help="many_topics publish rates, comma-separated (100,300); the "
                                 "marginal cost is taken between the lowest and the highest")
        parser.add_argument("--mt-topics", type=int, default=None,
                            help="many_topics: how many topics, two members each (2000)")
        parser.add_argument("--mt-topics-per-socket", type=int, default=10,
                            help="many_topics: topics joined on one socket (10; 1: a socket "
                                 "per member)")
        parser.add_argument("--idle-sockets", type=int, default=None,
                            help="idle scenario: sockets on one WS node (10000)")
        parser.add_argument("--cpu-duration", type=float, default=None,
                            help="seconds of the CPU comparison step (default 10; 1 with --quick)")

    def handle(self, *args, **options) -> None:
        # SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so every cluster this run started
        # is stopped by its ``finally`` instead of being left behind.
        signal.signal(signal.SIGTERM, _interrupt)
        chosen = _csv(options["backends"], BACKENDS, "backends") if options["backends"] else None
        scenarios = _csv(options["scenarios"], SCENARIOS, "scenarios")
        shapes = _csv(options["shapes"], CAPACITY_SHAPES, "shapes")
        quick = options["quick"]
        duration = options["duration"] or (1.0 if quick else 4.0)
        members = options["members"] or (10 if quick else 200)
        cpu_duration = options["cpu_duration"] or (1.0 if quick else 10.0)
        rates = _rates(options["rates"]) or \
            ([20.0, 40.0] if quick else [float(r) for r in FULL_RATES])
        sizes = dict(
            mt_topics=options["mt_topics"] or (40 if quick else 2000),
            mt_rates=_rates(options["mt_rates"]) or ([20.0, 40.0] if quick else [100.0, 300.0]),
            idle_sockets=options["idle_sockets"] or (200 if quick else 10000),
            idle_topics=20 if quick else 1000, idle_seconds=3.0 if quick else 30.0,
            js_sockets=20 if quick else 500, js_per_socket=5 if quick else 10,
            js_topics=20 if quick else 1000,
            ns_sizes=[2, 4] if quick else [2, 4, 8, 16], ns_members=10 if quick else 40,
            ns_rate=20.0 if quick else 100.0)
        out = Path(options["out"])
        out.mkdir(parents=True, exist_ok=True)
        log = open(out / "servers.log", "w")  # noqa: SIM115 - closed below

        def say(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        bench = Bench(options["server"], say, log)
        capacity = None
        if "capacity" in scenarios:
            try:
                cores = None if options["server_cores"] == "none" else \
                    pinning.parse_cores(options["server_cores"])
                capacity = Capacity(bench, cores, say)
            except pinning.PinningError as exc:
                raise CommandError(f"--server-cores: {exc}") from None
        step_seconds = options["step_seconds"] or (2.0 if quick else STEP_SECONDS)
        room_rates = _rates(options["rates"]) or ([100.0, 200.0] if quick else ROOM_RATES)
        fanout_rates = _rates(options["fanout_rates"]) or ([5.0, 10.0] if quick
                                                           else FANOUT_RATES)

        def backends_of(scenario: str) -> list[str]:
            if chosen:
                return chosen
            return list(CAPACITY_BACKENDS if scenario == "capacity" else DEFAULT_BACKENDS)

        backends = list(dict.fromkeys(b for sc in scenarios for b in backends_of(sc)))
        results: dict[str, dict] = {b: {} for b in backends}
        machine: dict[str, dict] = {}  # what this machine's own floor is (topics.devtools.benchmark.floor)
        started = time.monotonic()
        try:
            for scenario in scenarios:
                say(f"== {scenario}")
                for backend in backends_of(scenario):
                    if scenario == "node_scale" and backend in ("local", *PLAIN_BACKENDS):
                        continue  # one process, no Redis / no stand-in for a plain consumer
                    if scenario == "capacity":
                        results[backend]["capacity"] = {
                            shape: capacity.run(backend, shape, room_rates
                                                if shape == "small_rooms" else fanout_rates,
                                                step_seconds)
                            for shape in shapes}
                    elif scenario == "fanout":
                        results[backend]["fanout"] = bench.fanout(
                            backend, members, rates, duration, stop_at_limit=not quick,
                            cpu_rate=options["cpu_rate"], cpu_duration=cpu_duration)
                    elif scenario == "many_topics":
                        if "floor" not in machine:
                            machine["floor"] = floor.wakeup_cost(200 if quick else 3000)
                            say(f"  this machine: one process wake-up (a loopback message "
                                f"between two sleeping processes) costs "
                                f"{machine['floor']['us_per_wakeup']:.0f} us of CPU")
                        results[backend]["many_topics"] = bench.many_topics(
                            backend, sizes["mt_topics"], sizes["mt_rates"], duration * 2,
                            options["mt_topics_per_socket"])
                    elif scenario == "idle":
                        results[backend]["idle"] = bench.idle(
                            backend, sizes["idle_sockets"], sizes["idle_topics"],
                            sizes["idle_seconds"])
                    elif scenario == "join_storm":
                        results[backend]["join_storm"] = bench.join_storm(
                            backend, sizes["js_sockets"], sizes["js_per_socket"],
                            sizes["js_topics"])
                    elif scenario == "node_scale":
                        results[backend]["node_scale"] = bench.node_scale(
                            backend, sizes["ns_sizes"], sizes["ns_members"], sizes["ns_rate"],
                            max(1.0, duration / 2))
        finally:
            log.close()
        found = report.targets(results)
        data = {
            "meta": {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                     "server": options["server"], "duration_s": duration, "quick": quick,
                     "backends": backends, "scenarios": scenarios, "fanout_members": members,
                     "fanout_rates": rates, "cpu_rate": options["cpu_rate"],
                     "cpu_duration_s": cpu_duration, "sizes": sizes, "python": platform.python_version(),
                     "cpus": _cpus(), "wall_s": time.monotonic() - started,
                     "machine": _machine(), "capacity_step_s": step_seconds,
                     "capacity_rates": {"small_rooms": room_rates, "fanout": fanout_rates}},
            "results": results, "targets": found, "machine": machine,
        }
        report.write_json(out / "results.json", data)
        plots = []
        if "fanout" in scenarios and report.plot(out / "fanout_p99.png", results):
            plots.append(str(out / "fanout_p99.png"))
        if "many_topics" in scenarios and report.plot_publish_cost(
                out / "many_topics_cpu.png", results, options["server"]):
            plots.append(str(out / "many_topics_cpu.png"))
        if "capacity" in scenarios and capacity_report.plot(
                [out / "capacity_p99.png", out / "capacity_p99.svg"], results):
            plots.append(str(out / "capacity_p99.png"))
        fanout_lines = report.fanout_table(results) if "fanout" in scenarios else []
        lines = ["", *fanout_lines, *report.other_tables(results, machine),
                 *capacity_report.table(results),
                 *report.target_lines(found), "",
                 f"results: {out / 'results.json'}" + "".join(f", plot: {p}" for p in plots)]
        say("\n".join(lines))


def _rates(value: str | None) -> list[float]:
    if not value:
        return []
    try:
        return [float(r) for r in value.split(",") if r.strip()]
    except ValueError:
        raise CommandError(f"rates must be numbers separated by commas (got {value!r})") from None


def _cpus() -> int | None:
    import os

    return os.cpu_count()


def _machine() -> dict:
    """What the figures were measured on: the CPU model, the cores, and how busy the machine
    was (the load averages) when the run ended."""
    import os

    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu_model": model, "cpus": os.cpu_count(), "platform": platform.platform(),
            "load_average": os.getloadavg()}
