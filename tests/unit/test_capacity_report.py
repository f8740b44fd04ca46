"""The capacity scenario's judgements (which step held, what capacity a ladder proves) and its
layouts, from hand-made steps (pure logic; tests/e2e/test_benchmark_smoke.py runs the command)."""
from __future__ import annotations

import pytest

from topics.devtools.benchmark import shapes
from topics.devtools.benchmark.capacity_report import (
    capacity,
    capacity_line,
    ratios,
    step_line,
    why_not_held,
)


def step(rate: float, p99: float | None = 20.0, share: float = 0.3, **counts: int) -> dict:
    base = {"rate": rate, "publish_rate": rate, "offered_deliveries_per_s": rate * 2,
            "p50_ms": 5.0, "p99_ms": p99, "max_ms": 50.0, "lost": 0, "dups": 0,
            "reorders": 0, "order_violations": 0, "publish_errors": 0,
            "cpu_us_per_delivery": 100.0, "server_core_share": 0.5,
            "others_on_server_cores": 0.1, "loadgen_core_share": share}
    return {**base, **counts}


def test_a_clean_step_under_100_ms_holds() -> None:
    assert why_not_held(step(100, p99=100.0)) == []


@pytest.mark.parametrize(("changes", "reason"), [
    ({"p99_ms": 100.5}, "p99 100 ms > 100 ms"),
    ({"p99_ms": None}, "nothing delivered"),
    ({"lost": 3}, "3 lost"),
    ({"dups": 1}, "1 duplicated"),
    ({"reorders": 2}, "2 reordered"),
    ({"order_violations": 1}, "1 in another order"),
    ({"publish_errors": 4}, "4 publishes refused"),
    ({"publish_rate": 90.0}, "sent 90/s of 100/s offered"),
])
def test_each_violation_makes_a_step_not_hold(changes: dict, reason: str) -> None:
    assert why_not_held({**step(100), **changes}) == [reason]


def test_capacity_is_the_last_rate_of_the_held_run_from_the_lowest() -> None:
    # A step above the first failure that held again does not count.
    steps = [step(300), step(100), step(600, p99=150.0, share=0.85), step(1200)]
    found = capacity(steps)
    assert found["rate"] == 300 and found["deliveries_per_s"] == 600
    assert found["loadgen_core_share"] == 0.3
    failure = found["first_failure"]
    assert failure["rate"] == 600 and failure["reasons"] == ["p99 150 ms > 100 ms"]
    assert failure["loadgen_may_limit"] is True  # 0.85 of its cores: it may be the limit
    line = capacity_line("dps", {"capacity": found})
    assert "held up to 300 pub/s = 600 deliveries/s" in line and "may be the limit" in line


def test_no_held_step_is_a_capacity_of_zero_and_a_full_ladder_says_so() -> None:
    assert capacity([step(100, lost=1)])["rate"] == 0.0
    full = capacity([step(100), step(200)])
    assert full["rate"] == 200 and full["first_failure"] is None and full["untested_above"]


def test_ratios_are_dps_over_each_baseline() -> None:
    def result(rate: float) -> dict:
        return {"capacity": capacity([step(rate)] if rate else [step(100, lost=1)])}

    found = ratios({"dps": result(2500), "redis_pubsub": result(500), "plain_redis": result(0)})
    assert found == {"redis_pubsub": 5.0, "plain_redis": None}


def test_a_step_line_names_why_it_did_not_hold() -> None:
    line = step_line("plain_redis", "fanout", step(5, p99=230.0, lost=2))
    assert "p99 230 ms > 100 ms; 2 lost" in line and "RedisChannelLayer" in line


def test_small_rooms_put_one_member_of_each_room_on_each_node() -> None:
    layout = shapes.rooms(199, 10, 2)
    assert layout.sockets == [20, 20] and layout.members == 398
    assert sum(len(p) for p in layout.publishers) == 199
    assert len({(i, p[0]) for i, pubs in enumerate(layout.publishers) for p in pubs}) == 40
    assert layout.deliveries_per_publish() == 2


def test_fanout_spreads_members_and_two_publishers_per_node() -> None:
    layout = shapes.fanout(200, 2)
    assert layout.sockets == [100, 100] and layout.deliveries_per_publish() == 200
    assert [len(p) for p in layout.publishers] == [2, 2]
