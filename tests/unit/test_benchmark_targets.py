"""The benchmark's target verdicts, from hand-made results (pure logic; the smoke test runs
the real command)."""
from __future__ import annotations

import pytest

from topics.devtools.benchmark.report import targets
from topics.devtools.benchmark.scenarios import marginal_cost


def fanout(max_ok: float, rates: list[float]) -> dict:
    steps = [{"rate": r, "ok": r <= max_ok, "lost": 0, "dups": 0, "reorders": 0,
              "order_violations": 0, "cpu_us_per_delivery": 1.0} for r in rates]
    return {"fanout": {"steps": steps, "max_ok_rate": max_ok}}


def rate_target(results: dict) -> dict:
    (verdict,) = [t for t in targets(results) if "highest rate" in t["target"]]
    return verdict


@pytest.mark.parametrize(("dps", "pubsub", "redis", "holds", "shown"), [
    (160, 28, 5, True, "vs best channels_redis 28 msg/s"),
    (80, 28, 5, False, "vs best channels_redis 28 msg/s"),
    # Both channels_redis layers failed the lowest step (5 msg/s): their limit is below 5.
    (80, 0, 0, True, "< 5 msg/s (failed the lowest step)"),
    (10, 0, 0, False, "< 5 msg/s (failed the lowest step)"),
])
def test_rate_target(dps: float, pubsub: float, redis: float, holds: bool, shown: str) -> None:
    ladder = [5, 7, 10, 14, 20, 28, 40, 56, 80, 110, 160, 220]
    verdict = rate_target({"dps": fanout(dps, ladder), "redis_pubsub": fanout(pubsub, ladder),
                           "redis": fanout(redis, ladder)})
    assert verdict["holds"] is holds
    assert shown in verdict["detail"]


def mt_step(rate: float, published_per_s: float, cpu_per_s: dict[str, float],
            lost: int = 0) -> dict:
    return {"rate": rate, "published_per_s": published_per_s,
            "cpu_per_s": sum(cpu_per_s.values()), "cpu_per_s_by_role": cpu_per_s,
            "lost": lost, "dups": 0, "reorders": 0, "order_violations": 0,
            "publish_errors": 0, "cpu_us_per_delivery": 1.0}


def test_marginal_cost_is_the_cpu_difference_over_the_publish_rate_difference() -> None:
    # 0.05 core idle; 200 us per publish (WS 120, TS 50, Redis 30) on top of it.
    low = mt_step(100, 100, {"ws": 0.03 + 0.012, "ts": 0.01 + 0.005, "redis": 0.01 + 0.003})
    high = mt_step(300, 300, {"ws": 0.03 + 0.036, "ts": 0.01 + 0.015, "redis": 0.01 + 0.009})
    marginal = marginal_cost([low, high])
    assert marginal["cpu_us_per_publish"] == pytest.approx(200)
    assert marginal["cpu_us_per_publish_by_role"] == pytest.approx(
        {"ws": 120, "ts": 50, "redis": 30})
    # Without the steps' wake-up counts (an older results file) there is no wake-up figure.
    assert "wakeups_per_publish" not in marginal
    # A step that lost messages does not count; one clean step is no difference.
    assert marginal_cost([low, mt_step(300, 300, {"ws": 1.0}, lost=1)]) is None


@pytest.mark.parametrize(("marginal_us", "holds"), [(149.0, True), (151.0, False)])
def test_the_marginal_target_is_150_us(marginal_us: float, holds: bool) -> None:
    cpu = marginal_us * 1e-6
    steps = [mt_step(100, 100, {"ws": 0.01 + 100 * cpu}), mt_step(300, 300,
                                                                  {"ws": 0.01 + 300 * cpu})]
    results = {"dps": {"many_topics": {"steps": steps, "marginal": marginal_cost(steps)}}}
    (verdict,) = [t for t in targets(results) if "marginal" in t["target"]]
    assert verdict["holds"] is holds


def test_the_delivery_ratio_compares_the_highest_rate_both_delivered_cleanly() -> None:
    def run(per_delivery: dict[float, float]) -> dict:
        steps = [{**mt_step(r, r, {"ws": 0.1}), "cpu_us_per_delivery": us}
                 for r, us in per_delivery.items()]
        return {"many_topics": {"steps": steps, "marginal": None}}

    results = {"dps": run({100: 150.0, 300: 100.0}),
               "redis_pubsub": run({100: 1500.0, 300: 1000.0})}
    (verdict,) = [t for t in targets(results) if "RedisPubSub" in t["target"]]
    assert verdict["holds"] and "at 300 msg/s" in verdict["detail"]
    results["dps"]["many_topics"]["steps"][1]["cpu_us_per_delivery"] = 160.0
    (verdict,) = [t for t in targets(results) if "RedisPubSub" in t["target"]]
    assert not verdict["holds"] and "ratio 0.16" in verdict["detail"]


def test_marginal_wakeups_are_the_wakeup_rate_difference_over_the_publish_rate_difference():
    low = {**mt_step(100, 100, {"ws": 0.1}),
           "wakeups_per_s_by_role": {"ws": 1000 + 250, "ts": 50 + 120, "redis": 200 + 260}}
    high = {**mt_step(300, 300, {"ws": 0.3}),
            "wakeups_per_s_by_role": {"ws": 1000 + 750, "ts": 50 + 360, "redis": 200 + 780}}
    marginal = marginal_cost([low, high])
    assert marginal["wakeups_per_publish"] == pytest.approx(6.3)
    assert marginal["wakeups_per_publish_by_role"] == pytest.approx(
        {"ws": 2.5, "ts": 1.2, "redis": 2.6})
