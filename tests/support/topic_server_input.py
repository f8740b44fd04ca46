"""A topic server fed envelope by envelope, with no I/O: the cluster it belongs to and the feed.

Shared by the unit tests of the owner's rules and the integration tests that drive its clock.
"""
from __future__ import annotations

from channel_layer import wire
from channel_layer.clock import SYSTEM_CLOCK, Clock
from channel_layer.cluster import parse_cluster
from channel_layer.memory_transport import MemoryTransport
from channel_layer.settings import LayerSettings
from channel_layer.topic_server import TopicServer

CLUSTER = parse_cluster({"nodes": [
    {"name": "ws-a", "role": "ws", "redis": "redis://h:1/0"},
    {"name": "ws-b", "role": "ws", "redis": "redis://h:2/0"},
    {"name": "ts-a", "role": "ts", "redis": "redis://h:3/0"},
]}, "test")
HISTORY = {"rooms.*": {"size": 5, "ttl": 60}}


def feed(ts: TopicServer, *envelopes: list, now: float = 100.0) -> None:
    for envelope in envelopes:
        ts.handle(wire.encode(envelope), now)


class ManualClock:
    """A :class:`channel_layer.clock.Clock` that moves only when the test says."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> Clock:
        return Clock(wall=lambda: self.now, monotonic=lambda: self.now)


def presence_owner(clock: Clock = SYSTEM_CLOCK, **settings) -> TopicServer:
    """An owner keeping presence and ``HISTORY`` in memory only (its Redis is never asked)."""
    ts = TopicServer(CLUSTER, "ts-a", MemoryTransport(), LayerSettings(history=HISTORY,
                                                                       **settings), clock=clock)
    ts.history._own = lambda: None  # memory only: these tests are about the rules, not Redis
    ts.history._others = lambda: []
    return ts
