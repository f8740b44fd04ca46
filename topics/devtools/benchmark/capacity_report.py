"""The capacity scenario's judgements and output, as pure functions of its steps.

A step *held* when its p99 delivery latency was at most 100 ms and every published message
reached every member exactly once and in order (no loss, duplicate, reorder or per-topic order
difference, no refused publish), with the generators sending at least 95% of the offered rate
(else the step did not offer what it says). A back end's *capacity* on a shape is the highest
rate below which every step held: the last step of the run of held steps from the lowest rate.

The generators' own CPU share is reported for the claimed step and for the first step that did
not hold: above :data:`LOADGEN_SHARE_LIMIT` of their cores the limit found may be theirs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

P99_LIMIT_MS = 100.0
OFFERED_MIN_SHARE = 0.95  # of the offered publish rate the generators must have sent
LOADGEN_SHARE_LIMIT = 0.8  # of the load cores: above it, the generator may be the limit
LABELS = {"dps": "DPS", "redis_pubsub": "RedisPubSub + DPS consumer",
          "plain_redis_pubsub": "RedisPubSub + plain consumer",
          "plain_redis": "RedisChannelLayer + plain consumer", "redis": "RedisChannelLayer + DPS consumer",
          "local": "local (1 node, no layer)"}
SHAPE_TITLES = {"small_rooms": "small rooms (199 rooms of 2, one member per WS node)",
                "fanout": "fan-out (1 topic, 200 members)"}


def why_not_held(step: dict) -> list[str]:
    """Every reason ``step`` did not hold; empty when it held."""
    reasons = []
    p99 = step.get("p99_ms")
    if p99 is None:
        reasons.append("nothing delivered")
    elif p99 > P99_LIMIT_MS:
        reasons.append(f"p99 {p99:.0f} ms > {P99_LIMIT_MS:.0f} ms")
    for key, what in (("lost", "lost"), ("dups", "duplicated"), ("reorders", "reordered"),
                      ("order_violations", "in another order"),
                      ("publish_errors", "publishes refused")):
        if step.get(key):
            reasons.append(f"{step[key]} {what}")
    if step.get("publish_rate", 0.0) < OFFERED_MIN_SHARE * step["rate"]:
        reasons.append(f"sent {step.get('publish_rate', 0.0):.0f}/s of {step['rate']:.0f}/s "
                       f"offered")
    return reasons


def capacity(steps: list[dict]) -> dict[str, Any]:
    """The highest rate below which every step held (steps in any order, judged by rate), the
    first step that did not hold, and the generators' CPU share at both."""
    ordered = sorted(steps, key=lambda s: s["rate"])
    claimed = failed = None
    for step in ordered:
        if why_not_held(step):
            failed = step
            break
        claimed = step
    out: dict[str, Any] = {"rate": claimed["rate"] if claimed else 0.0,
                           "deliveries_per_s": claimed["offered_deliveries_per_s"]
                           if claimed else 0.0,
                           "loadgen_core_share": claimed.get("loadgen_core_share")
                           if claimed else None,
                           "first_failure": None}
    if failed is not None:
        share = failed.get("loadgen_core_share")
        out["first_failure"] = {
            "rate": failed["rate"], "reasons": why_not_held(failed),
            "loadgen_core_share": share,
            "loadgen_may_limit": share is not None and share > LOADGEN_SHARE_LIMIT}
    else:
        out["untested_above"] = True  # every step held: the capacity is at least this
    return out


def _f(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def step_line(backend: str, shape: str, step: dict) -> str:
    reasons = why_not_held(step)
    return (f"  {LABELS.get(backend, backend):36s} {shape:11s} {step['rate']:>6.0f} pub/s "
            f"({step['offered_deliveries_per_s']:>6.0f} dlv/s): p50 {_f(step['p50_ms'])} "
            f"p99 {_f(step['p99_ms'])} max {_f(step['max_ms'])} ms, lost {step['lost']}, "
            f"server {_f(step['cpu_us_per_delivery'])} us/dlv "
            f"({_f(step['server_core_share'], '.2f')} of its cores, others "
            f"{_f(step['others_on_server_cores'], '.2f')}), load gen "
            f"{_f(step['loadgen_core_share'], '.2f')} of its cores"
            + ("" if not reasons else "  <- " + "; ".join(reasons)))


HEADER = (f"{'back end':36s} {'pub/s':>6s} {'dlv/s':>7s} {'sent/s':>7s} {'p50 ms':>7s} "
          f"{'p99 ms':>7s} {'max ms':>7s} {'lost':>5s} {'dup':>4s} {'order':>5s} "
          f"{'us/dlv':>7s} {'srv core':>8s} {'others':>6s} {'gen core':>8s}  held")


def table(results: dict) -> list[str]:
    """Every step of every back end, shape by shape, then each back end's capacity."""
    lines: list[str] = []
    for shape, title in SHAPE_TITLES.items():
        rows = [(b, r["capacity"][shape]) for b, r in results.items()
                if shape in (r.get("capacity") or {})]
        if not rows:
            continue
        lines += ["", f"capacity, {title}: server processes pinned, {rows[0][1]['step_seconds']:.0f} s "
                      f"steps; 'srv core'/'gen core': CPU share of the server/load cores, "
                      f"'others': other processes on the server cores", HEADER]
        for backend, result in rows:
            for s in result["steps"]:
                lines.append(
                    f"{LABELS.get(backend, backend):36s} {s['rate']:>6.0f} "
                    f"{s['offered_deliveries_per_s']:>7.0f} {s['publish_rate']:>7.0f} "
                    f"{_f(s['p50_ms']):>7s} {_f(s['p99_ms']):>7s} {_f(s['max_ms']):>7s} "
                    f"{s['lost']:>5d} {s['dups']:>4d} {s['order_violations'] + s['reorders']:>5d} "
                    f"{_f(s['cpu_us_per_delivery']):>7s} {_f(s['server_core_share'], '.2f'):>8s} "
                    f"{_f(s['others_on_server_cores'], '.2f'):>6s} "
                    f"{_f(s['loadgen_core_share'], '.2f'):>8s}  "
                    f"{'yes' if not why_not_held(s) else 'NO'}")
        lines.append("")
        lines += [capacity_line(backend, result) for backend, result in rows]
        lines += ratio_lines(dict(rows))
    return lines


def capacity_line(backend: str, result: dict) -> str:
    cap = result["capacity"]
    text = (f"{LABELS.get(backend, backend):36s} held up to {cap['rate']:.0f} pub/s = "
            f"{cap['deliveries_per_s']:.0f} deliveries/s (load gen "
            f"{_f(cap['loadgen_core_share'], '.2f')} of its cores)")
    failure = cap["first_failure"]
    if failure is None:
        return text + "; every step held (the ladder ended)"
    text += (f"; {failure['rate']:.0f} pub/s did not: {'; '.join(failure['reasons'])}")
    if failure["loadgen_may_limit"]:
        text += f" (load gen {failure['loadgen_core_share']:.2f}: it may be the limit)"
    return text


def ratios(by_backend: dict[str, dict]) -> dict[str, float | None]:
    """DPS's capacity over each other back end's (None where that one held no step)."""
    dps = by_backend.get("dps")
    if not dps:
        return {}
    mine = dps["capacity"]["deliveries_per_s"]
    return {b: (mine / r["capacity"]["deliveries_per_s"] if r["capacity"]["deliveries_per_s"]
                else None) for b, r in by_backend.items() if b != "dps"}


def ratio_lines(by_backend: dict[str, dict]) -> list[str]:
    lines = []
    for backend, ratio in ratios(by_backend).items():
        if ratio is None:
            lines.append(f"  DPS vs {LABELS.get(backend, backend)}: that back end held no step")
        else:
            lines.append(f"  DPS vs {LABELS.get(backend, backend)}: {ratio:.1f}x the held rate")
    return lines


def plot(paths: list[Path], results: dict) -> bool:
    """p99 against offered deliveries/s, one line per back end, one panel per shape; saved to
    every path (PNG, SVG). False when there was nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = [s for s in SHAPE_TITLES if any(s in (r.get("capacity") or {})
                                             for r in results.values())]
    if not shapes:
        return False
    fig, axes = plt.subplots(1, len(shapes), figsize=(7 * len(shapes), 5), squeeze=False)
    for ax, shape in zip(axes[0], shapes, strict=True):
        for backend, per in results.items():
            steps = [s for s in (per.get("capacity") or {}).get(shape, {}).get("steps", ())
                     if s["p99_ms"] is not None]
            if steps:
                ax.plot([s["offered_deliveries_per_s"] for s in steps],
                        [s["p99_ms"] for s in steps], marker="o",
                        label=LABELS.get(backend, backend))
        ax.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1,
                   label="p99 limit (100 ms)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered deliveries / s")
        ax.set_ylabel("p99 delivery latency (ms)")
        ax.set_title(SHAPE_TITLES[shape], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
