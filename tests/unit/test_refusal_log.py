"""A refused handshake logs one line with its status and reason, rate-limited per reason."""
from __future__ import annotations

import logging

from topics.transport import handshake
from topics.transport.handshake import RefusalLog, refuse

SCOPE = {"type": "websocket", "client": ("203.0.113.7", 5555)}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_refusal_is_logged_with_its_status_reason_and_client(caplog, monkeypatch):
    monkeypatch.setattr(handshake, "REFUSALS", RefusalLog())
    sent = []

    async def send(message):
        sent.append(message)

    import asyncio

    with caplog.at_level(logging.WARNING, logger="topics.transport.handshake"):
        asyncio.run(refuse(SCOPE, send, 403, "unauthenticated"))
    assert sent == [{"type": "websocket.close"}]
    assert caplog.messages == ["refused a socket from 203.0.113.7: 403 unauthenticated"]


def test_a_flood_of_one_reason_is_one_line_per_interval_and_counts_the_rest(caplog):
    clock = Clock()
    log = RefusalLog(interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="topics.transport.handshake"):
        for _ in range(500):
            log.refused(429, "too many connections for this identity", SCOPE)
        log.refused(503, "the node is full", SCOPE)  # another reason: its own line
        clock.now += 10
        log.refused(429, "too many connections for this identity", SCOPE)
    assert caplog.messages == [
        "refused a socket from 203.0.113.7: 429 too many connections for this identity",
        "refused a socket from 203.0.113.7: 503 the node is full",
        "refused a socket from 203.0.113.7: 429 too many connections for this identity "
        "(499 more since the last such line)",
    ]
