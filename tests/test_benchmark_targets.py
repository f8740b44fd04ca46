"""The benchmark's target verdicts, from hand-made results (pure logic; the smoke test runs
the real command)."""
from __future__ import annotations

import pytest

from topics.benchmark.report import targets


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
