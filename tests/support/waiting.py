"""A bounded poll for a condition another process makes true (a page, a node's stats)."""
from __future__ import annotations

import time
from collections.abc import Callable

POLL_INTERVAL = 0.2  # seconds between checks: a poll, not a guess at how long something takes


def wait_until(check: Callable[[], object], timeout: float = 30.0, what: str = "") -> object:
    """``check()``'s first true value; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(POLL_INTERVAL)
