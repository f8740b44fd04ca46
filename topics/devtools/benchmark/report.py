"""Results out: the readable table, the issue's targets, the JSON file and the PNG plot."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

IDLE_TOLERANCE = 0.25  # heartbeat traffic is subtracted as an estimated idle rate
BACKEND_LABELS = {"dps": "DPS", "redis": "RedisChannelLayer",
                  "redis_pubsub": "RedisPubSubChannelLayer", "local": "local (1 node)"}


def _f(value, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def fanout_table(results: dict) -> list[str]:
    lines = ["fanout (1 topic; publish rate stepped until p99 > 100 ms or a violation; "
             "'cpu ref': one longer step at the same rate for every back end)",
             f"{'back end':24s} {'rate':>6s} {'pub/s':>7s} {'deliv/s':>8s} {'p50 ms':>7s} "
             f"{'p99 ms':>7s} {'max ms':>7s} {'cpu us/dlv':>10s} {'redis cmd/pub':>13s} "
             f"{'lost':>5s} {'dup':>4s} {'order':>5s}  ok"]
    for backend, per in results.items():
        fanout = per.get("fanout")
        if not fanout:
            continue
        reference = fanout.get("cpu_reference")
        for step in fanout["steps"] + ([reference] if reference else []):
            label = BACKEND_LABELS.get(backend, backend) + (" cpu ref" if step is reference
                                                            else "")
            lines.append(
                f"{label:24s} {step['rate']:>6.0f} "
                f"{step['publish_rate']:>7.0f} {step['delivered_per_s']:>8.0f} "
                f"{_f(step['p50_ms']):>7s} {_f(step['p99_ms']):>7s} {_f(step['max_ms']):>7s} "
                f"{_f(step['cpu_us_per_delivery']):>10s} "
                f"{_f(step.get('redis_commands_per_publish'), '.2f'):>13s} {step['lost']:>5d} "
                f"{step['dups']:>4d} {step['order_violations'] + step['reorders']:>5d}  "
                f"{'yes' if step['ok'] else 'NO'}")
        lines.append(f"{'':24s} highest rate with p99 <= 100 ms and no violation: "
                     f"{fanout['max_ok_rate']:.0f} msg/s; RSS/connection "
                     f"{fanout['rss_per_connection'] / 1024:.0f} KiB")
    return lines


def other_tables(results: dict, machine: dict | None = None) -> list[str]:
    lines: list[str] = []
    rows = [(b, r["many_topics"]) for b, r in results.items() if r.get("many_topics")]
    wakeup_us = (machine or {}).get("floor", {}).get("us_per_wakeup")
    if rows:
        lines += ["", "many_topics (2 members per topic, one per WS node; publishers on both "
                      "nodes). Server CPU us per publish and per delivery, all processes and "
                      "by role",
                  f"{'back end':24s} {'topics':>6s} {'rate':>6s} {'pub/s':>7s} {'deliv/s':>8s} "
                  f"{'p50 ms':>7s} {'p99 ms':>7s} {'us/pub':>7s} {'WS':>6s} {'TS':>6s} "
                  f"{'Redis':>6s} {'us/dlv':>7s} {'cmd/pub':>7s} {'lost':>5s} {'dup':>4s} "
                  f"{'order':>5s}"]
        for backend, r in rows:
            label = BACKEND_LABELS.get(backend, backend)
            for step in r["steps"]:
                role = step["cpu_us_per_publish_by_role"]
                lines.append(
                    f"{label:24s} {r['topics']:>6d} {step['rate']:>6.0f} "
                    f"{step['publish_rate']:>7.0f} {step['delivered_per_s']:>8.0f} "
                    f"{_f(step['p50_ms']):>7s} {_f(step['p99_ms']):>7s} "
                    f"{_f(step['cpu_us_per_publish'], '.0f'):>7s} "
                    f"{_f(role.get('ws'), '.0f'):>6s} {_f(role.get('ts'), '.0f'):>6s} "
                    f"{_f(role.get('redis'), '.0f'):>6s} "
                    f"{_f(step['cpu_us_per_delivery'], '.0f'):>7s} "
                    f"{_f(step.get('redis_commands_per_publish'), '.2f'):>7s} "
                    f"{step['lost']:>5d} {step['dups']:>4d} "
                    f"{step['order_violations'] + step['reorders']:>5d}")
            marginal = r.get("marginal")
            if marginal:
                by_role = ", ".join(f"{role} {us:.0f}" for role, us in
                                    marginal["cpu_us_per_publish_by_role"].items())
                lines.append(f"{'':24s} marginal {marginal['from_rate']:.0f} -> "
                             f"{marginal['to_rate']:.0f} msg/s: "
                             f"{marginal['cpu_us_per_publish']:.0f} us per publish ({by_role})")
                wakeups = marginal.get("wakeups_per_publish")
                if wakeups is not None:
                    by_role = ", ".join(f"{role} {n:.1f}" for role, n in
                                        marginal["wakeups_per_publish_by_role"].items())
                    floor = (f" = {wakeups * wakeup_us:.0f} us at {wakeup_us:.0f} us each"
                             if wakeup_us else "")
                    lines.append(f"{'':24s} process wake-ups per publish: {wakeups:.1f} "
                                 f"({by_role}){floor}")
    rows = [(b, r["idle"]) for b, r in results.items() if r.get("idle")]
    if rows:
        lines += ["", "idle (sockets on one WS node, joined, heartbeats only)",
                  f"{'back end':24s} {'sockets':>7s} {'topics':>6s} {'WS node %core':>13s} "
                  f"{'all servers %core':>17s} {'redis cmd/s':>11s} {'KiB/conn':>8s}"]
        for backend, r in rows:
            lines.append(
                f"{BACKEND_LABELS.get(backend, backend):24s} {r['sockets']:>7d} "
                f"{r['topics']:>6d} {r['ws_node_core_share'] * 100:>13.2f} "
                f"{r['all_servers_core_share'] * 100:>17.2f} "
                f"{_f(r.get('redis_commands_per_s'), '.1f'):>11s} "
                f"{r['rss_per_connection'] / 1024:>8.0f}")
    rows = [(b, r["join_storm"]) for b, r in results.items() if r.get("join_storm")]
    if rows:
        lines += ["", "join_storm (all joins sent at once, pipelined per socket)",
                  f"{'back end':24s} {'joins':>6s} {'joins/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} "
                  f"{'max ms':>7s} {'cpu us/join':>11s} {'redis cmd/join':>14s}"]
        for backend, r in rows:
            lines.append(
                f"{BACKEND_LABELS.get(backend, backend):24s} {r['joins']:>6d} "
                f"{r['joins_per_s']:>8.0f} {_f(r['p50_ms']):>7s} {_f(r['p99_ms']):>7s} "
                f"{_f(r['max_ms']):>7s} {_f(r['cpu_us_per_join']):>11s} "
                f"{_f(r.get('redis_commands_per_join'), '.2f'):>14s}")
    rows = [(b, r["node_scale"]) for b, r in results.items() if r.get("node_scale")]
    if rows:
        lines += ["", "node_scale (members on 2 WS nodes; the rest are idle stand-in layer "
                      "instances). Redis commands / bytes per publish, all Redis servers",
                  f"{'back end':24s} {'WS nodes':>8s} {'cmd/pub':>8s} {'marginal':>8s} "
                  f"{'B/pub':>8s} {'marg. B':>8s} {'idle cmd/s':>10s}  marginal commands"]
        for backend, r in rows:
            for p in r["points"]:
                calls = ", ".join(f"{c} {v:.2f}" for c, v in
                                  sorted(p["marginal_calls_per_publish"].items(),
                                         key=lambda kv: -abs(kv[1]))[:5])
                lines.append(
                    f"{BACKEND_LABELS.get(backend, backend):24s} {p['ws_nodes']:>8d} "
                    f"{p['commands_per_publish']:>8.2f} {p['marginal_commands_per_publish']:>8.2f} "
                    f"{p['bytes_per_publish']:>8.0f} {p['marginal_bytes_per_publish']:>8.0f} "
                    f"{p['idle_commands_per_s']:>10.1f}  {calls}")
    return lines


def _clean_rates(fanout: dict) -> dict[float, dict]:
    """The steps every message of which arrived exactly once and in order, by rate (p99 may be
    over the limit: CPU per delivery is comparable at the same offered load either way)."""
    return {s["rate"]: s for s in fanout["steps"] if _is_clean(s)}


def _is_clean(step: dict | None) -> bool:
    return bool(step) and not (step["lost"] or step["dups"] or step["reorders"]
                               or step["order_violations"] or step.get("publish_errors")) \
        and step["cpu_us_per_delivery"] is not None


def _common_step(a: dict, b: dict) -> tuple[dict, dict, str] | None:
    """The two back ends' CPU comparison steps: their reference steps (one rate, a longer
    measurement) when both delivered cleanly, else the ladder steps at the highest rate both
    delivered cleanly."""
    ref_a, ref_b = a.get("cpu_reference"), b.get("cpu_reference")
    if _is_clean(ref_a) and _is_clean(ref_b) and ref_a["rate"] == ref_b["rate"]:
        return ref_a, ref_b, f"the reference step, {ref_a['seconds']:.0f} s"
    ra, rb = _clean_rates(a), _clean_rates(b)
    common = sorted(set(ra) & set(rb))
    if common:
        return ra[common[-1]], rb[common[-1]], \
            "the highest ladder rate both delivered without loss, duplicate or reorder"
    return None


def targets(results: dict) -> list[dict]:
    """The issues' targets, computed from this run's numbers."""
    return fanout_targets(results) + publish_targets(results)


def fanout_targets(results: dict) -> list[dict]:
    out: list[dict] = []
    fan = {b: r["fanout"] for b, r in results.items() if r.get("fanout")}
    dps = fan.get("dps")
    if not dps:
        return out
    for other, factor, label in (("redis_pubsub", 1 / 3, "<= 1/3 of RedisPubSubChannelLayer's"),
                                 ("local", 1.5, "<= 1.5x local's")):
        if other not in fan:
            continue
        pair = _common_step(dps, fan[other])
        if pair is None:
            continue
        mine, theirs = pair[0]["cpu_us_per_delivery"], pair[1]["cpu_us_per_delivery"]
        out.append({"target": f"DPS server CPU per delivered message {label}",
                    "holds": mine <= factor * theirs,
                    "detail": f"at {pair[0]['rate']:.0f} msg/s ({pair[2]}): DPS {mine:.1f} us vs "
                              f"{theirs:.1f} us (ratio {mine / theirs:.2f}, limit {factor:.2f})"})
    theirs = [fan[b] for b in ("redis", "redis_pubsub") if b in fan]
    redis_best = max((f["max_ok_rate"] for f in theirs), default=None)
    if redis_best is not None:
        top_step = max((s["rate"] for s in dps["steps"]), default=0)
        capped = dps["max_ok_rate"] == top_step and dps["steps"][-1]["ok"]
        # A layer that fails even the lowest step has a limit below that step's rate.
        bound = redis_best or min((f["steps"][0]["rate"] for f in theirs if f["steps"]),
                                  default=0)
        best_text = f"{redis_best:.0f} msg/s" if redis_best else \
            f"< {bound:.0f} msg/s (failed the lowest step)"
        out.append({"target": "DPS highest rate with p99 <= 100 ms >= 3x the best channels_redis "
                              "layer's",
                    "holds": bound > 0 and dps["max_ok_rate"] >= 3 * bound,
                    "detail": f"DPS {dps['max_ok_rate']:.0f} msg/s"
                              + (" (the last step; the real limit may be higher)" if capped else "")
                              + f" vs best channels_redis {best_text}"})
    ok = [s for s in dps["steps"] if s.get("redis_calls_per_publish")]
    if ok:
        # The step with the most publishes: the idle traffic subtracted below is an estimate,
        # and its error per publish shrinks with the number of publishes.
        step = max(ok, key=lambda s: s["published"])
        with_members = dps["ws_nodes"]
        want = 1 + with_members
        marginal = step.get("marginal_calls_per_publish", step["redis_calls_per_publish"])
        total = step.get("marginal_commands_per_publish", step["redis_commands_per_publish"])
        out.append({"target": f"DPS Redis commands per publish = 1 + WS nodes with members "
                              f"(= {want}), every command on every Redis counted",
                    "holds": abs(total - want) <= IDLE_TOLERANCE,
                    "detail": f"at {step['rate']:.0f} msg/s ({step['published']} publishes): "
                              f"{total:.2f}/publish beyond the idle heartbeats "
                              f"({step['redis_commands_per_publish']:.2f} raw; tolerance "
                              f"{IDLE_TOLERANCE} for the idle estimate): " + ", ".join(
                        f"{c} {v:.2f}" for c, v in sorted(marginal.items(),
                                                          key=lambda kv: -kv[1]))})
    return out


MARGINAL_LIMIT_US = 150.0
DELIVERY_RATIO_LIMIT = 0.15
JOIN_LIMIT_US = 100.0
FANOUT_LIMIT_US = 35.0
IDLE_LIMIT_SHARE = 0.02


def _same_rate_pair(a: dict, b: dict) -> tuple[dict, dict] | None:
    """The steps of two many_topics runs at the highest rate both delivered cleanly."""
    ra = {s["rate"]: s for s in a["steps"] if _is_clean(s)}
    rb = {s["rate"]: s for s in b["steps"] if _is_clean(s)}
    common = sorted(set(ra) & set(rb))
    return (ra[common[-1]], rb[common[-1]]) if common else None


def publish_targets(results: dict) -> list[dict]:
    """The publish-cost targets (many_topics, idle, join_storm, fanout), from this run."""
    out: list[dict] = []
    dps = results.get("dps", {})
    many = dps.get("many_topics")
    if many:
        marginal = many.get("marginal")
        out.append({"target": f"DPS marginal server CPU per publish <= {MARGINAL_LIMIT_US:.0f} "
                              "us (many_topics, 2 members)",
                    "holds": bool(marginal) and marginal["cpu_us_per_publish"]
                    <= MARGINAL_LIMIT_US,
                    "detail": "no two clean steps" if not marginal else
                    f"{marginal['from_rate']:.0f} -> {marginal['to_rate']:.0f} msg/s: "
                    f"{marginal['cpu_us_per_publish']:.0f} us"})
        theirs = results.get("redis_pubsub", {}).get("many_topics")
        pair = theirs and _same_rate_pair(many, theirs)
        if pair:
            mine, other = pair[0]["cpu_us_per_delivery"], pair[1]["cpu_us_per_delivery"]
            out.append({"target": f"DPS CPU per delivery <= {DELIVERY_RATIO_LIMIT} x "
                                  "RedisPubSubChannelLayer's (many_topics)",
                        "holds": mine <= DELIVERY_RATIO_LIMIT * other,
                        "detail": f"at {pair[0]['rate']:.0f} msg/s: {mine:.0f} us vs "
                                  f"{other:.0f} us (ratio {mine / other:.2f})"})
    storm = dps.get("join_storm")
    if storm:
        out.append({"target": f"DPS server CPU per join <= {JOIN_LIMIT_US:.0f} us (join_storm)",
                    "holds": storm["cpu_us_per_join"] <= JOIN_LIMIT_US,
                    "detail": f"{storm['cpu_us_per_join']:.0f} us over {storm['joins']} joins"})
    reference = (dps.get("fanout") or {}).get("cpu_reference")
    if _is_clean(reference):
        out.append({"target": f"DPS fan-out CPU per delivery <= {FANOUT_LIMIT_US:.0f} us "
                              f"({dps['fanout']['members']} members)",
                    "holds": reference["cpu_us_per_delivery"] <= FANOUT_LIMIT_US,
                    "detail": f"{reference['cpu_us_per_delivery']:.1f} us at "
                              f"{reference['rate']:.0f} msg/s"})
    idle = dps.get("idle")
    if idle:
        out.append({"target": f"DPS WS node with {idle['sockets']} idle sockets on "
                              f"{idle['topics']} topics <= {IDLE_LIMIT_SHARE:.0%} of a core",
                    "holds": idle["ws_node_core_share"] <= IDLE_LIMIT_SHARE,
                    "detail": f"{idle['ws_node_core_share'] * 100:.2f}% over "
                              f"{idle['seconds']:.0f} s"})
    return out


def target_lines(found: list[dict]) -> list[str]:
    if not found:
        return []
    lines = ["", "targets (this run)"]
    for t in found:
        lines.append(f"  [{'HOLDS' if t['holds'] else 'FAILS'}] {t['target']}: {t['detail']}")
    return lines


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False))


def _steps_plot(path: Path, results: dict, scenario: str, x: str, y: str,
                setup: Callable[[Any], None]) -> bool:
    """One line per back end of ``scenario``'s steps (``y`` against ``x``), saved to
    ``path``; ``setup`` labels the axes. False when no back end had steps to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    drew = False
    for backend, per in results.items():
        steps = [s for s in (per.get(scenario) or {}).get("steps") or () if s[y] is not None]
        if not steps:
            continue
        ax.plot([s[x] for s in steps], [s[y] for s in steps], marker="o",
                label=BACKEND_LABELS.get(backend, backend))
        drew = True
    setup(ax)
    if drew:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drew


def plot(path: Path, results: dict) -> bool:
    """p99 latency vs delivered rate, one line per back end (fanout steps)."""
    def setup(ax: Any) -> None:
        ax.axhline(100, color="grey", linestyle="--", linewidth=1, label="p99 limit (100 ms)")
        ax.set_xlabel("delivered messages / s")
        ax.set_ylabel("p99 delivery latency (ms)")
        ax.set_yscale("log")
        ax.set_title("fanout: p99 latency vs delivered rate")
        ax.grid(True, which="both", alpha=0.3)

    return _steps_plot(path, results, "fanout", "delivered_per_s", "p99_ms", setup)


def plot_publish_cost(path: Path, results: dict, server: str) -> bool:
    """Server CPU per publish against the publish rate (many_topics steps), one line per
    back end."""
    def setup(ax: Any) -> None:
        ax.set_xlabel("publishes / s (2-member topics)")
        ax.set_ylabel("server CPU per publish (us, all processes)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"many_topics under {server}: CPU per publish vs rate")
        ax.grid(True, alpha=0.3)

    return _steps_plot(path, results, "many_topics", "publish_rate", "cpu_us_per_publish", setup)
