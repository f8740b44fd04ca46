"""This WS process's own figures: joins, publishes, deliveries, slow clients, latency.

The hot path only adds to plain integers here (a delivery costs two additions, not a
Prometheus lock); :mod:`topics.operator.prometheus_export` and
:mod:`topics.operator.node_report` read them. Latency is
publish to deliver: the publisher's wall-clock time travels in the broadcast message
(``sent_at``), and the receiving node measures once per message and counts that figure for
every member it hands the message to.
"""
from __future__ import annotations

import bisect
import math
import time
from typing import Any

# Upper bounds (seconds) of the publish -> deliver histogram's buckets; the last is +Inf.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   math.inf)
SENT_AT = "sent_at"          # the broadcast message's publisher timestamp
_MEASURED = "_dps_latency"   # (bucket, seconds) kept on the shared message, once per node


class ProcessCounters:
    """Counts since this process started; every field is a Prometheus counter.

    ``channel_crashes`` counts topic handlers that raised (``topics.transport.consumer``);
    ``presence_update_errors`` the ``topics.api.presence_update`` calls a socket could not pass
    to the topic's owner (the old meta stays). The
    server patches' (``topics.adapters``): ``direct_frame_fallbacks`` and
    ``direct_receive_fallbacks`` count connections whose broadcasts (client frames) take the
    server's own path although the patch is on; ``server_patch_fallbacks`` the patches left off
    because a server's version is outside their window; ``direct_receive_frames`` and
    ``daphne_scan_ticks`` show the fast paths at work (frames read directly, ticks of daphne's
    due-only scans).
    """

    __slots__ = ("joins", "publishes", "publish_errors", "join_errors", "channel_crashes",
                 "presence_update_errors", "deliveries",
                 "slow_client_disconnects", "direct_frame_fallbacks", "direct_receive_fallbacks",
                 "direct_receive_frames", "daphne_scan_ticks", "server_patch_fallbacks",
                 "report_errors")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class LatencyHistogram:
    """Bucket counts (not cumulative) and the sum of every observed latency."""

    def __init__(self) -> None:
        self.counts = [0] * len(LATENCY_BUCKETS)
        self.sum = 0.0

    def cumulative(self) -> list[tuple[float, int]]:
        running, out = 0, []
        for bound, count in zip(LATENCY_BUCKETS, self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


COUNTS = ProcessCounters()
LATENCY = LatencyHistogram()


def stamp() -> float:
    """The publisher's timestamp for a broadcast message."""
    return time.time()


def record_delivery(message: dict[str, Any]) -> None:
    """Count one broadcast handed to one member, with its publish -> deliver latency."""
    COUNTS.deliveries += 1
    measured = message.get(_MEASURED)
    if measured is None:
        sent = message.get(SENT_AT)
        if not isinstance(sent, (int, float)):
            return  # a message from a publisher that sends no timestamp
        latency = max(0.0, time.time() - sent)
        measured = message[_MEASURED] = (bisect.bisect_left(LATENCY_BUCKETS, latency), latency)
    LATENCY.counts[measured[0]] += 1
    LATENCY.sum += measured[1]
