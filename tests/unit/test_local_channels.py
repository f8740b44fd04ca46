"""Fastlane batches: a member whose connection just went away is counted, not an ERROR."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest
from autobahn.exception import Disconnected
from uvicorn.protocols.utils import ClientDisconnected

from channel_layer.local_channels import Fastlane, Wakeups
from topics.adapters.disconnects import register_server_disconnect_errors


@pytest.mark.parametrize("gone", [Disconnected("Attempt to send on a closed protocol"),
                                  ClientDisconnected(), BrokenPipeError()])
async def test_a_member_gone_mid_broadcast_is_counted_and_the_others_still_get_it(
    gone: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    got: list[dict] = []

    def closed(message: dict) -> None:
        raise gone

    register_server_disconnect_errors()  # as topics.adapters.install does
    counters: Counter[str] = Counter()
    wake = Wakeups(counters)
    message = {"type": "phx.broadcast"}
    for deliver in (got.append, closed, got.append):
        wake.call(Fastlane(loop, deliver), message)
    with caplog.at_level(logging.DEBUG, logger="channel_layer.local_channels"):
        wake.fire()
    assert got == [message, message]
    assert counters == {"deliveries_to_closed_clients": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_unexpected_delivery_failure_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: dict) -> None:
        raise KeyError("topic")

    counters: Counter[str] = Counter()
    wake = Wakeups(counters)
    wake.call(Fastlane(asyncio.get_running_loop(), broken), {})
    wake.fire()
    assert counters == {"fastlane_delivery_errors": 1}
    assert "fastlane delivery failed" in caplog.text
