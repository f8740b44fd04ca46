"""Every limit and interval of the layer and the topic server, as one named setting each.

Values come from ``CHANNEL_LAYERS[alias]["CONFIG"]`` (for the layer) and ``settings.DPS_LAYER``
(read by the topic server and merged under CONFIG), with the defaults below.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

RUNTIME_LOOPS = ("auto", "server", "thread")
# Durations that may be 0 (no wait); every other number must be positive.
MAY_BE_ZERO = frozenset({"startup_sync_timeout", "ring_settle_time", "presence_interval"})


@dataclass(frozen=True)
class LayerSettings:
    expiry: float = 60                # seconds a message may wait before it is dropped
    capacity: int = 100               # messages queued per channel before ChannelFull
    group_expiry: float = 86400       # seconds a group membership lasts without renewal
    max_message_bytes: int = 4 * 1024 * 1024  # encoded size above which MessageTooLarge
    inbox_cap: int = 100_000          # entries a node inbox holds; the oldest go beyond it
    outbox_limit: int = 10_000        # envelopes queued for one destination; beyond, refused
    read_batch: int = 512             # inbox entries taken per read
    read_block_ms: int = 1000         # how long one inbox read waits for entries
    read_retry_interval: float = 1.0  # seconds between attempts while a node's own Redis is down
    heartbeat_interval: float = 1.0   # how often a WS node tells each TS node it is alive
    node_timeout: float = 10.0        # silence after which a TS drops a WS node's members
    startup_sync_timeout: float = 2.0  # a restarted TS waits this long for WS resyncs
    stats_interval: float = 2.0       # how often a TS publishes its counters for the admin
    stats_top_groups: int = 100       # groups listed in a TS's published stats
    connect_timeout: float = 2.0      # seconds to connect to a node's Redis
    confirm_timeout: float = 5.0      # seconds to wait for an owner's JOINED, or another
                                      # node's answer to a membership change or a flush
    prefix: str = "dps"               # Redis key prefix (lets clusters share one Redis)
    runtime_loop: str = "auto"        # "server", "thread" or "auto": see channel_layer.runtime
    # History of broadcasts at each group's owner (channel_layer.history), by group glob:
    # {"rooms.*": {"size": 100, "ttl": 300}}; empty: no history.
    history: dict = field(default_factory=dict)
    history_meta_ttl: float = 86400   # seconds a group's epoch and offset outlive its history
    history_cache_groups: int = 10_000  # groups whose history an owner keeps in memory
    presence_interval: float = 0.1    # seconds over which an owner coalesces presence changes
    # A topic server that has not renewed its lease for this long leaves the ring on every
    # node (channel_layer.liveness); its topics go to the next servers.
    ts_failover_after: float = 5.0
    # After a ring change: how long a gaining server holds publishes until every WS node has
    # re-registered, and how long a losing one keeps serving nodes that have not noticed.
    ring_settle_time: float = 3.0
    unacked_limit: int = 20_000       # publishes kept per topic server until it acknowledges
    unacked_bytes_limit: int = 16 * 1024 * 1024  # and their bytes, per topic server
    ack_every: int = 256              # a TS acknowledges a busy origin this often, not only
                                      # once a heartbeat (keeps the origin's log short)
    dedup_window: int = 16_384        # publishes per origin and first server a WS node
                                      # remembers, to drop re-sent copies

    @classmethod
    def problems(cls, config: Any) -> list[str]:
        """What is wrong with ``config``, one sentence per key: an unknown key, a wrong type or
        a bad value, each saying what was expected. Empty: ``from_config`` accepts it."""
        if not isinstance(config, dict):
            return [f"expected a dict of the layer's settings, not {type(config).__name__}"]
        kinds = {f.name: f.type for f in fields(cls)}
        found = []
        for key, value in config.items():
            if key == "channel_capacity":  # channels' own key, which the layer ignores
                continue
            kind = kinds.get(key)
            if kind is None:
                found.append(f"unknown key {key!r} (known: {', '.join(sorted(kinds))})")
            elif kind in ("float", "int") and not _number(value, kind == "int", key in MAY_BE_ZERO):
                what = "an integer" if kind == "int" else "a number"
                what += " >= 0" if key in MAY_BE_ZERO else " > 0"
                found.append(f"{key} must be {what}, not {value!r}")
            elif kind == "str" and not isinstance(value, str):
                found.append(f"{key} must be a string, not {value!r}")
            elif kind == "dict" and not isinstance(value, dict):
                found.append(f"{key} must be a dict, not {value!r}")
        loop = config.get("runtime_loop", "auto")
        if isinstance(loop, str) and loop not in RUNTIME_LOOPS:
            found.append(f"runtime_loop must be one of {', '.join(RUNTIME_LOOPS)}, not {loop!r}")
        if isinstance(config.get("history", {}), dict):
            from channel_layer.history import HistoryPatterns

            try:
                HistoryPatterns(config.get("history", {}))
            except (TypeError, ValueError) as exc:
                found.append(f"history: {exc}")
        return found

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LayerSettings:
        """The settings of ``config``; ``ValueError`` naming every problem (a node refuses to
        start with it, rather than run with a value it cannot use)."""
        found = cls.problems(config)
        if found:
            raise ValueError(f"bad DPS layer settings: {'; '.join(found)}")
        return cls(**{k: v for k, v in config.items() if k != "channel_capacity"})


def _number(value: Any, integer: bool, zero_ok: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        return False
    return value >= 0 if zero_ok else value > 0
