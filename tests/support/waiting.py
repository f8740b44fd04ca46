"""The suite's one way to wait for a condition: a bounded poll, never a guess at a duration.

- :func:`wait_until`: sync code waiting for another process or thread (a port, a page, a
  node's stats), on the real clock.
- :func:`seconds_until`: the same, answering how long it took (a recovery time under test).
- :func:`holds_within`: the same, answering whether it held (a retry loop that tries again).
- :func:`await_until`: the same from a coroutine; the loop keeps running between checks.
- :func:`settle_until`: unit tests, where everything runs on the test's own loop: yields to the
  loop (``asyncio.sleep(0)``) until the condition holds, bounded by a number of loop turns, not
  by the clock.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_INTERVAL = 0.2  # seconds between checks: a poll, not a guess at how long something takes
ASYNC_POLL_INTERVAL = 0.02  # a coroutine's checks cost the loop little: check more often
LOOP_TURNS = 1000  # settle_until's bound: far more turns than any chain of awaits in a unit


def wait_until(check: Callable[[], object], timeout: float = 30.0, what: str = "",
               interval: float = POLL_INTERVAL) -> object:
    """``check()``'s first true value; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)  # a bounded poll: re-check until the deadline


def seconds_until(check: Callable[[], object], timeout: float, what: str,
                  interval: float = 0.02) -> float:
    """Seconds until ``check()`` held (polled finely: the figure is the result); fails as
    :func:`wait_until` after ``timeout``."""
    started = time.monotonic()
    wait_until(check, timeout, what, interval)
    return time.monotonic() - started


def holds_within(check: Callable[[], object], timeout: float,
                 interval: float = POLL_INTERVAL) -> bool:
    """Whether ``check()`` held within ``timeout`` s, instead of failing."""
    try:
        wait_until(check, timeout, "", interval)
    except AssertionError:
        return False
    return True


async def await_until(check: Callable[[], object], timeout: float = 30.0, what: str = "",
                      interval: float = ASYNC_POLL_INTERVAL) -> object:
    """:func:`wait_until` for coroutines: ``check()``'s first true value, polled on the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(interval)  # a bounded poll: re-check until the deadline


async def settle_until(check: Callable[[], object], what: str = "",
                       turns: int = LOOP_TURNS) -> object:
    """``check()``'s first true value, letting the loop run the ready tasks between checks;
    AssertionError naming ``what`` if it is still false after ``turns`` loop turns."""
    for _ in range(turns):
        value = check()
        if value:
            return value
        await asyncio.sleep(0)  # one loop turn: the tasks the test started run a step
    raise AssertionError(f"not within {turns} loop turns: {what}")
