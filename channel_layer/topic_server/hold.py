"""The hold gate: publishes, joins and plain memberships held back, in order, while WS nodes
re-register (after a start, a rejoin or a ring change that gives this server groups).

The gate is open once every WS node has sent its snapshot under this server's ring (the server
says so through ``all_synced``) or when its time runs out (``startup_sync_timeout`` /
``ring_settle_time``). While anything is held, whatever arrives behind it waits too: one order.
Pure but for the injected clock.
"""
from __future__ import annotations

from collections.abc import Callable

from channel_layer.clock import SYSTEM_CLOCK, Clock


class HoldGate:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.until = 0.0  # clock.monotonic() after which nothing is held any more
        self.held: list[tuple] = []  # envelopes, in arrival order

    def hold_for(self, seconds: float) -> None:
        """Hold for ``seconds`` from now at least (a ring change: never shortens a hold)."""
        self.until = max(self.until, self.clock.monotonic() + seconds)

    def restart(self, seconds: float) -> None:
        """Hold for ``seconds`` from now (a start or a rejoin)."""
        self.until = self.clock.monotonic() + seconds

    def open(self) -> None:
        """Hold nothing from now (stopping: fan out what was held, now)."""
        self.until = 0.0

    def holding(self, all_synced: Callable[[], bool]) -> bool:
        """Whether what arrives now waits (its time has not run out, and not every WS node
        has re-registered yet)."""
        return self.clock.monotonic() < self.until and not all_synced()

    def hold(self, envelope: tuple) -> None:
        self.held.append(envelope)

    def take(self) -> list[tuple]:
        held, self.held = self.held, []
        return held

    def put_back(self, envelopes: list[tuple]) -> None:
        """Hold ``envelopes`` again, ahead of what was held since they were taken."""
        self.held = envelopes + self.held

    def clear(self) -> None:
        self.held.clear()
