"""What presence and history cost: the same cluster (2 WS under daphne, 2 TS) and load with
each of them off and on (``manage.py benchmark_presence``).

- ``cost``: ``members`` sockets join one topic (CPU per join), then publish at ``rate`` for
  ``duration`` (CPU per publish and per delivery, every server process counted), for four
  configurations: neither (``topics:cost``), presence only, history only, both
  (``rooms:cost``, with ``DPS_PRESENCE`` / the layer's ``history`` switched per run).
- ``storm``: ``sockets`` sockets join one topic at once, presence off and on: joins/s, and the
  presence frames every socket received (one ``presence_state`` each, and the coalesced
  ``presence_diff`` events), against the N² diffs an uncoalesced presence would send.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from topics.devtools.benchmark.measures import CpuMeter
from topics.devtools.benchmark.scenarios import Bench, all_call

CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "off": ("topics:cost", {}),
    "presence": ("rooms:cost", {"DPS_LAYER": json.dumps({"history": {}})}),
    "history": ("rooms:cost", {"DPS_PRESENCE": ""}),
    "both": ("rooms:cost", {}),
}
SETTLE_S = 3.0  # presence diffs leave every presence_interval (0.1 s): wait well past it


@contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _settled_pushes(run) -> dict[str, int]:
    """Push counts once they stop changing (the last coalesced diffs have arrived)."""
    last: dict[str, int] | None = None
    while True:
        time.sleep(SETTLE_S)
        counts: dict[str, int] = {}
        for reply in all_call(run.gens, [("counts", {})] * len(run.gens)):
            for event, n in reply["pushes"].items():
                counts[event] = counts.get(event, 0) + n
        if counts == last:
            return counts
        last = counts


def cost(bench: Bench, config: str, members: int, rate: float, duration: float) -> dict:
    topic, env = CONFIGS[config]
    with _environment(env):
        run = bench.open_run("dps")
    try:
        sockets = _split(members, len(run.gens))
        bench._connect(run, sockets)
        before = run.sample()
        bench._join(run, [[[s, topic] for s in range(k)] for k in sockets])
        joined = run.measure(before, run.sample())
        _settled_pushes(run)
        pubs = [[[j, topic, i * 1000 + j] for j in range(min(2, k))]
                for i, k in enumerate(sockets)]
        step, _ = bench._step(run, rate, duration, pubs, {})
        result = {"config": config, "topic": topic, "members": members,
                  "cpu_us_per_join": joined["cpu_s"] * 1e6 / members,
                  "join_seconds": joined["seconds"],
                  "cpu_us_per_publish": step["cpu_s"] * 1e6 / max(1, step["published"]),
                  "cpu_us_per_delivery": step["cpu_us_per_delivery"],
                  "by_role_us_per_delivery": step["cpu_us_per_delivery_by_role"],
                  "lost": step["lost"], "dups": step["dups"], "p99_ms": step["p99_ms"]}
        if "redis_commands_per_publish" in step:
            result["redis_commands_per_publish"] = step["redis_commands_per_publish"]
        bench.say(f"  {config:9s} join {result['cpu_us_per_join']:8.0f} µs CPU/join   "
                  f"publish {result['cpu_us_per_publish']:8.0f} µs CPU/publish, "
                  f"{result['cpu_us_per_delivery'] or 0:6.1f} µs/delivery, "
                  f"{result.get('redis_commands_per_publish', 0):.2f} Redis cmds/publish, "
                  f"lost {result['lost']}")
        return result
    finally:
        bench.close_run(run)


def storm(bench: Bench, config: str, sockets: int) -> dict:
    topic, env = {"off": ("topics:storm", {}), "both": ("rooms:storm", {}),
                  "presence": CONFIGS["presence"]}[config]
    topic = topic.replace("cost", "storm")
    with _environment(env):
        run = bench.open_run("dps")
    try:
        counts = _split(sockets, len(run.gens))
        bench._connect(run, counts)
        generators = CpuMeter({"loadgen": [gen.pid for gen in run.gens]})
        before, gens_before = run.sample(), generators.snapshot()
        replies = bench._join(run, [[[s, topic] for s in range(k)] for k in counts])
        seconds = max(r["seconds"] for r in replies)
        pushes = _settled_pushes(run)
        measured = run.measure(before, run.sample())
        loadgen_cpu = CpuMeter.delta(gens_before, generators.snapshot())
        diffs = pushes.get("presence_diff", 0)
        result = {"config": config, "sockets": sockets, "join_seconds": seconds,
                  "joins_per_s": sockets / seconds, "cpu_s": measured["cpu_s"],
                  "cpu_s_by_role": measured["cpu_s_by_role"], "loadgen_cpu_s": loadgen_cpu,
                  "presence_state_frames": pushes.get("presence_state", 0),
                  "presence_diff_frames": diffs,
                  "diff_frames_per_socket": diffs / sockets,
                  "uncoalesced_diff_frames": sockets * (sockets - 1) // 2 + sockets}
        bench.say(f"  storm {config:5s} {sockets} joins in {seconds:.2f}s "
                  f"({result['joins_per_s']:.0f}/s), server CPU {measured['cpu_s']:.1f}s "
                  f"(load generators {loadgen_cpu:.1f}s); "
                  f"presence_state {result['presence_state_frames']}, presence_diff "
                  f"{diffs} ({result['diff_frames_per_socket']:.1f} per socket; uncoalesced "
                  f"{result['uncoalesced_diff_frames']})")
        return result
    finally:
        bench.close_run(run)


def run_all(say: Callable[[str], None], log, members: int, rate: float, duration: float,
            sockets: int, configs: list[str]) -> dict:
    bench = Bench("daphne", say, log)
    say("== cost per join and per publish")
    costs = [cost(bench, c, members, rate, duration) for c in configs]
    say("== join storm on one topic")
    storms = [storm(bench, c, sockets) for c in ("off", "both") if c in configs or c == "off"] \
        if sockets else []
    return {"cost": costs, "storm": storms}
