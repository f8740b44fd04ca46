"""The topic server's hold gate and pause detector (``channel_layer.topic_server.hold`` and
``.lease``), on a clock the test moves: nothing waits."""
from __future__ import annotations

import pytest

from channel_layer.clock import Clock
from channel_layer.memory_transport import MemoryTransport
from channel_layer.settings import LayerSettings
from channel_layer.topic_server.hold import HoldGate
from channel_layer.topic_server.lease import Lease, PauseDetector


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> Clock:
        return Clock(wall=lambda: self.now, monotonic=lambda: self.now)


def test_the_gate_holds_until_every_node_synced_or_its_time_runs_out():
    time = ManualClock()
    gate = HoldGate(time.clock())
    synced = False
    assert not gate.holding(lambda: synced)  # open until told otherwise
    gate.restart(3.0)
    assert gate.holding(lambda: synced)
    synced = True
    assert not gate.holding(lambda: synced)
    synced = False
    time.now += 3.0
    assert not gate.holding(lambda: synced)  # its time ran out


def test_a_ring_change_never_shortens_a_hold_and_stopping_opens_it():
    time = ManualClock()
    gate = HoldGate(time.clock())
    gate.restart(10.0)
    gate.hold_for(2.0)
    time.now += 5.0
    assert gate.holding(lambda: False)
    gate.open()
    assert not gate.holding(lambda: False)


def test_held_envelopes_keep_their_order_when_some_are_put_back():
    gate = HoldGate(ManualClock().clock())
    for n in range(3):
        gate.hold([n])
    taken = gate.take()
    gate.hold([3])  # arrived while the first ones were being applied
    gate.put_back(taken[1:])
    assert gate.held == [[1], [2], [3]]


def test_the_pause_detector_counts_the_whole_round():
    time = ManualClock()
    pauses = PauseDetector(interval=1.0, heartbeat_interval=1.0, clock=time.clock())
    time.now += 2.5  # the sleep and a slow round: not yet a pause (over 2 heartbeats)
    assert pauses.overslept() is None
    time.now += 4.0  # a round of 4 s for a sleep of 1 s
    assert pauses.overslept() == pytest.approx(3.0)
    time.now += 9.0
    pauses.restart()  # a rejoin: nothing to excuse
    time.now += 1.0
    assert pauses.overslept() is None


async def test_a_lease_may_have_lapsed_past_its_margin_and_a_lapse_is_reported():
    time = ManualClock()
    transport = MemoryTransport()
    settings = LayerSettings(ts_failover_after=3.0, heartbeat_interval=1.0)
    lease = Lease(transport, "ts-a", settings, time.clock())
    assert lease.margin() == 2.5
    assert await lease.renew()  # the first: nothing lapsed
    assert not lease.may_have_lapsed()
    time.now += 2.6
    assert lease.may_have_lapsed()
    boot = lease.boot
    await lease.drop()  # as a drained server does: lapsed for every reader
    assert not await lease.renew()
    await lease.take_as_new_boot()
    assert lease.boot != boot and (await transport.read_leases(["ts-a"]))["ts-a"] == lease.boot
