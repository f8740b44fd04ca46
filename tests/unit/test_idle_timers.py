"""The idle-timeout wheel: one loop timer for every socket's timeout, at most a tick late."""
from __future__ import annotations

import asyncio

import pytest

from topics.transport import idle_timers as wheel_module
from topics.transport.idle_timers import idle_timers

TICK = 0.05


@pytest.fixture(autouse=True)
def short_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wheel_module, "TICK", TICK)


def test_callbacks_run_in_deadline_order_never_early_and_at_most_a_tick_late() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wheel = idle_timers(loop)
        start = loop.time()
        fired: list[tuple[int, float]] = []
        done = loop.create_future()
        delays = [0.3, 0.05, 0.2, 0.12, 0.2]
        for index, delay in enumerate(delays):
            def record(index: int = index) -> None:
                fired.append((index, loop.time()))
                if len(fired) == len(delays):
                    done.set_result(None)
            wheel.call_at(start + delay, record)
        await asyncio.wait_for(done, 5)
        assert [i for i, _ in fired] == [1, 3, 2, 4, 0]
        for index, at in fired:
            due = start + delays[index]
            # The loop's own timer may run a hair early (its clock resolution): 1 ms.
            assert due - 0.001 <= at <= due + TICK + 0.1, (index, at - due)
        # Only the wheel's one timer was on the loop for all five.
        assert len(loop._scheduled) <= 1  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_cancelled_timer_never_runs_and_a_callback_may_schedule_again() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wheel = idle_timers(loop)
        ran: list[str] = []
        done = loop.create_future()
        wheel.call_at(loop.time() + 0.05, lambda: ran.append("cancelled")).cancel()

        def again() -> None:
            ran.append("first")
            wheel.call_at(loop.time() + 0.1, lambda: (ran.append("second"),
                                                        done.set_result(None)))
        wheel.call_at(loop.time() + 0.05, again)
        await asyncio.wait_for(done, 5)
        assert ran == ["first", "second"]

    asyncio.run(scenario())


def test_a_failing_callback_is_logged_and_the_others_still_run(caplog) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wheel = idle_timers(loop)
        done = loop.create_future()
        at = loop.time() + 0.05
        wheel.call_at(at, lambda: 1 / 0)
        wheel.call_at(at, lambda: done.set_result(None))
        await asyncio.wait_for(done, 5)

    with caplog.at_level("ERROR", logger="topics.transport.idle_timers"):
        asyncio.run(scenario())
    assert any("idle timeout callback failed" in r.getMessage() for r in caplog.records)
