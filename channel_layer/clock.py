"""The clock that expiry, timeouts, holds and leases read: injectable, so that their rules are
tested without waiting on the real one.

``wall`` is the time of day (``time.time``: what travels between nodes, expiry stamps);
``monotonic`` measures intervals on this process (``time.monotonic``: holds, pauses, lease
margins). A test passes its own callables; production code takes :data:`SYSTEM_CLOCK`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic


SYSTEM_CLOCK = Clock()
