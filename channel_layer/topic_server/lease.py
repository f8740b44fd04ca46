"""A topic server's lease (``channel_layer.liveness``) and its pause detector.

The lease is renewed every housekeeping round, and before acting on what the inbox read when
the last renewal is older than :meth:`Lease.margin` (the process may have been paused past it,
and what it read re-sent to others meanwhile). A renewal that finds the lease lapsed tells the
server to rejoin as a new boot.

The pause detector measures each housekeeping round from the last check to just before the
judgement of the WS nodes, every await of the round included: a pause that began in a Redis
round trip rather than in the sleep would otherwise go unnoticed, and the nodes be judged on a
stale view.
"""
from __future__ import annotations

import logging
import os

from channel_layer.clock import SYSTEM_CLOCK, Clock
from channel_layer.settings import LayerSettings
from channel_layer.transport import LEASE_LAPSED, Transport, TransportError

logger = logging.getLogger("channel_layer.topic_server")


def new_boot() -> str:
    """A process life's name: what WS nodes and ACKs tell one life from the next by."""
    return os.urandom(6).hex()


class Lease:
    def __init__(self, transport: Transport, node: str, settings: LayerSettings,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.transport = transport
        self.node = node
        self.settings = settings
        self.clock = clock
        self.boot = new_boot()
        self.renewed_at = 0.0  # clock.monotonic() of the last renewal Redis confirmed

    def margin(self) -> float:
        """How old the last renewal may be before the lease may have lapsed."""
        return max(self.settings.ts_failover_after - self.settings.heartbeat_interval / 2,
                   self.settings.heartbeat_interval)

    def may_have_lapsed(self) -> bool:
        return self.clock.monotonic() - self.renewed_at > self.margin()

    async def renew(self) -> bool:
        """Hold the lease on as :attr:`boot`; False when it had lapsed meanwhile (every node
        has taken this server out of its ring). Our own Redis being down is not a lapse:
        nobody can read the lease either, so nobody takes us out of the ring for it."""
        try:
            before = await self.transport.renew_lease(
                self.node, self.boot, int(self.settings.ts_failover_after * 1000))
        except TransportError as exc:  # the inbox read reports the outage
            logger.debug("could not renew the lease of %s: %s", self.node, exc)
            return True
        self.renewed_at = self.clock.monotonic()
        return before != LEASE_LAPSED

    async def take_as_new_boot(self) -> None:
        """Rejoin: a new boot takes the lease (the next renewal tries again on failure)."""
        self.boot = new_boot()
        try:
            await self.transport.renew_lease(self.node, self.boot,
                                             int(self.settings.ts_failover_after * 1000))
            self.renewed_at = self.clock.monotonic()
        except TransportError as exc:
            logger.warning("could not take the lease of %s again: %s", self.node, exc)

    async def drop(self) -> None:
        """Give the lease up (a removed server that drained): out of every ring at once."""
        try:
            await self.transport.drop_lease(self.node, self.boot)
        except TransportError as exc:
            logger.warning("could not give up the lease of %s: %s", self.node, exc)


class PauseDetector:
    """Whether this process did not run for a while, measured round by round."""

    def __init__(self, interval: float, heartbeat_interval: float,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.interval = interval  # the round's own sleep
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self.checked_at = clock.monotonic()

    def restart(self) -> None:
        """Measure from now (a rejoin: no view is left to excuse)."""
        self.checked_at = self.clock.monotonic()

    def overslept(self) -> float | None:
        """How long the round since the last check overran its sleep, when that is a pause
        (over two heartbeat intervals); else None. Each call starts the next round."""
        now = self.clock.monotonic()
        over, self.checked_at = now - self.checked_at - self.interval, now
        return over if over > 2 * self.heartbeat_interval else None
