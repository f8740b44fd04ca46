"""When to restart a process that exited: the backoff policy of ``runcluster``'s supervision.

Pure logic, no processes: :class:`Backoff` turns "it exited after running this long" into "start
it again in this many seconds". A process that keeps dying waits longer each time (doubling up
to ``max_delay``), so a node that cannot start does not spin the machine; one that ran for
``stable_after`` seconds before it exited counts as healthy and is restarted quickly again.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5   # seconds before the first restart
    max_delay: float = 10.0    # the longest wait between restarts
    stable_after: float = 30.0  # a run this long resets the backoff to first_delay


class Backoff:
    """The restart delays of one process."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.restarts = 0
        self._delay: float | None = None

    def next_delay(self, ran_for: float) -> float:
        """The wait before restarting a process that exited after ``ran_for`` seconds."""
        if self._delay is None or ran_for >= self.policy.stable_after:
            self._delay = self.policy.first_delay
        else:
            self._delay = min(self._delay * 2, self.policy.max_delay)
        self.restarts += 1
        return self._delay


def describe_exit(code: int) -> str:
    """``-9`` -> ``"exit code -9 (SIGKILL)"``; ``3`` -> ``"exit code 3"``."""
    if code < 0:
        try:
            return f"exit code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"exit code {code}"
