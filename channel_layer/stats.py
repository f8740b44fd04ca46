"""What every node publishes about itself, where it lives in Redis, and in what shape.

The one seam between the nodes that write these facts (topic servers, WS nodes), and the admin,
the metrics and the tests that read them. Everything lives on the publishing node's own Redis:

- **Snapshot** ``{prefix}:stats:{node}``: one JSON object, rewritten every ``stats_interval``
  with a TTL of :func:`snapshot_ttl`. Its ``updated`` time is the node's heartbeat as the admin
  sees it. Fields of every role: ``role`` (``ws``/``ts``), ``node``, ``boot`` (this process's
  id), ``started`` and ``updated`` (epoch seconds), ``version``, ``counters`` (name -> count
  since start), ``rates`` (name -> per second over the last minute). A TS adds
  ``group_count``, ``member_count``, ``ws_nodes`` and ``groups`` (its hottest groups); a WS
  node adds ``connections`` and ``identities`` (open sockets per identity).
- **Topic table** of a topic server (:class:`TopicKeys`): three sorted sets scoring every group
  it owns by members, by publishes per second over the last minute and by last activity, and a
  hash of each group's row (:class:`TopicRow`, JSON). The topic server rewrites only the groups
  that changed since its last write, in batches (:class:`TopicTable`), so a list page reads one
  page of a sorted set and one ``HMGET``, whatever the number of topics.
"""
from __future__ import annotations

import asyncio
import heapq
import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis

from channel_layer.resp import CommandPipe, RespError
from channel_layer.version import VERSION  # noqa: F401  (DPS's version, as every node reports it)

WINDOW_SECONDS = 60.0        # rates and per-topic history cover the last minute
WRITE_CHUNK = 1000           # topic rows per pipelined write
SCAN_COUNT = 5000            # ZSCAN hint when searching a topic table by name

ORDERS = {"members": "members", "rate": "rate", "last": "last"}  # sort key -> sorted set
# One encoder for every row: json.dumps with separators builds a new encoder per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def snapshot_key(prefix: str, node: str) -> str:
    return f"{prefix}:stats:{node}"


def snapshot_ttl(stats_interval: float) -> int:
    """Seconds a snapshot outlives its writer: a few missed intervals, then it is gone."""
    return max(5, math.ceil(stats_interval * 5))


def down_after(stats_interval: float) -> float:
    """Heartbeat age after which the admin shows a node down (three missed snapshots)."""
    return max(3.0, stats_interval * 3)


def encode_snapshot(snapshot: Mapping[str, Any]) -> bytes:
    return _COMPACT.encode(snapshot).encode()


def decode_snapshot(raw: bytes | str | Mapping | None) -> dict[str, Any] | None:
    """The snapshot as a dict; ValueError when it is not a JSON object with the right shapes."""
    if raw is None:
        return None
    snapshot = dict(raw) if isinstance(raw, Mapping) else json.loads(raw)
    if not isinstance(snapshot, dict):
        raise ValueError("a stats snapshot must be a JSON object")
    for name, kind in (("groups", list), ("counters", dict), ("rates", dict)):
        if not isinstance(snapshot.get(name, kind()), kind):
            raise ValueError(f"a stats snapshot's {name!r} must be a {kind.__name__}")
    return snapshot


class RateWindow:
    """Per-second rates of cumulative counters over the last ``window`` seconds."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def add(self, now: float, totals: Mapping[str, int]) -> dict[str, float]:
        """Record the counters' values at ``now``; return the rates over the window."""
        self._samples.append((now, dict(totals)))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        first_at, first = self._samples[0]
        span = now - first_at
        if span <= 0:
            return {name: 0.0 for name in totals}
        return {name: max(0, value - first.get(name, 0)) / span for name, value in totals.items()}


# ------------------------------------------------------------------------ topic table
@dataclass(frozen=True)
class TopicKeys:
    """The keys of one topic server's topic table, on that server's Redis."""

    members: str
    rate: str
    last: str
    info: str

    @classmethod
    def of(cls, prefix: str, ts: str) -> TopicKeys:
        base = f"{prefix}:topics:{ts}"
        return cls(f"{base}:members", f"{base}:rate", f"{base}:last", f"{base}:info")

    def ordered_by(self, order: str) -> str:
        return getattr(self, ORDERS[order])

    @property
    def all(self) -> tuple[str, ...]:
        return (self.members, self.rate, self.last, self.info)


@dataclass
class TopicRow:
    """One group as the admin shows it. ``history``: publishes per ``bucket`` seconds, oldest
    first, covering the last minute."""

    group: str
    members: dict[str, int]
    messages: int
    created: float
    last_activity: float
    bucket: float
    history: list[int] = field(default_factory=list)

    @property
    def total_members(self) -> int:
        return sum(self.members.values())

    @property
    def rate(self) -> float:
        """Publishes per second over the last minute."""
        return sum(self.history) / WINDOW_SECONDS

    def encode(self) -> str:
        return _COMPACT.encode({"group": self.group, "members": self.members,
                                "messages": self.messages, "created": self.created,
                                "last_activity": self.last_activity, "bucket": self.bucket,
                                "history": self.history})

    @classmethod
    def decode(cls, raw: bytes | str) -> TopicRow:
        data = json.loads(raw)
        return cls(group=str(data["group"]), members={str(k): int(v) for k, v in
                                                      data["members"].items()},
                   messages=int(data["messages"]), created=float(data["created"]),
                   last_activity=float(data["last_activity"]), bucket=float(data["bucket"]),
                   history=[int(n) for n in data.get("history", [])])


@dataclass
class TopicBatch:
    """What changed in a topic table since the last write."""

    upserts: list[TopicRow] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reset: bool = False  # the first write of a process: drop what an earlier run left


class TopicTable:
    """A topic server's side of the topic table: which groups changed since the last write.

    The server calls :meth:`touch` for a group whose members or message count changed (a set
    insertion: the idle groups cost nothing), and :meth:`collect` every ``bucket`` seconds.
    A group is written when touched, and while it has publishes in its one-minute history (its
    rate decays); the first collect of a process writes every group.
    """

    def __init__(self, bucket: float) -> None:
        self.bucket = bucket
        self.slots = max(1, round(WINDOW_SECONDS / bucket))
        self._messages: dict[str, int] = {}        # message count as last written
        self._history: dict[str, deque[int]] = {}  # groups with publishes in the last minute
        self._dirty: set[str] = set()
        self._first = True

    def touch(self, name: str) -> None:
        self._dirty.add(name)

    def collect(self, groups: Mapping[str, Any]) -> TopicBatch:
        batch = TopicBatch(reset=self._first)
        names = list(groups) if self._first else self._dirty | self._history.keys()
        self._first, self._dirty = False, set()
        written, history = self._messages, self._history
        for name in names:
            state = groups.get(name)
            if state is None:
                if written.pop(name, None) is not None:
                    batch.removed.append(name)
                history.pop(name, None)
                continue
            delta = state.messages - written.get(name, 0)
            recent = history.get(name)
            if delta > 0 and recent is None:
                recent = history[name] = deque(maxlen=self.slots)
            if recent is not None:
                recent.append(max(0, delta))
                if not any(recent):
                    del history[name]  # written once more with rate 0, then left alone
            written[name] = state.messages
            batch.upserts.append(self.row(name, state))
        return batch

    def hottest(self, count: int) -> list[tuple[str, int]]:
        """The ``count`` groups with the most publishes over the last minute, busiest first."""
        return heapq.nlargest(count, ((name, sum(recent)) for name, recent in
                                      self._history.items()), key=lambda item: (item[1], item[0]))

    def recent_publishes(self, name: str) -> int:
        """Publishes to ``name`` over the last minute, as of the last :meth:`collect`."""
        recent = self._history.get(name)
        return sum(recent) if recent else 0

    def row(self, name: str, state: Any) -> TopicRow:
        recent = self._history.get(name, ())
        padded = [0] * (self.slots - len(recent)) + list(recent)
        return TopicRow(name, dict(state.members), state.messages, state.created,
                        state.last_activity, self.bucket, padded)


def _b(value: str | float | int) -> bytes:
    return value.encode() if isinstance(value, str) else repr(value).encode()


def topic_batch_commands(keys: TopicKeys, batch: TopicBatch, ttl: int
                         ) -> list[list[list[bytes]]]:
    """The Redis commands that apply ``batch`` to a topic table, in pipelined chunks of at
    most ``WRITE_CHUNK`` rows. Every key gets ``ttl``: the table of a topic server that is gone
    disappears with it."""
    chunks: list[list[list[bytes]]] = []
    first: list[list[bytes]] = [[b"DEL", *map(_b, keys.all)]] if batch.reset else []
    members, rate, last, info = map(_b, keys.all)
    for start in range(0, len(batch.upserts), WRITE_CHUNK):
        rows = batch.upserts[start:start + WRITE_CHUNK]
        by_members, by_rate, by_last, hset = [b"ZADD", members], [b"ZADD", rate], \
            [b"ZADD", last], [b"HSET", info]
        for row in rows:
            group = row.group.encode()
            by_members += (_b(row.total_members), group)
            by_rate += (_b(row.rate), group)
            by_last += (_b(row.last_activity), group)
            hset += (group, row.encode().encode())
        chunks.append([*first, by_members, by_rate, by_last, hset])
        first = []
    tail = first
    for start in range(0, len(batch.removed), WRITE_CHUNK):
        names = [n.encode() for n in batch.removed[start:start + WRITE_CHUNK]]
        tail += [[b"ZREM", key, *names] for key in (members, rate, last)]
        tail.append([b"HDEL", info, *names])
    tail += [[b"EXPIRE", _b(key), b"%d" % ttl] for key in keys.all]
    chunks.append(tail)
    return chunks


async def write_topic_batch(client: Any, keys: TopicKeys, batch: TopicBatch,
                            ttl: int) -> None:
    """Apply ``batch`` to a topic table (see :func:`topic_batch_commands`) through a bare
    :class:`channel_layer.resp.CommandPipe` (a topic server's: no redis-py packing per
    command) or a ``redis.asyncio`` client."""
    for commands in topic_batch_commands(keys, batch, ttl):
        if isinstance(client, CommandPipe):
            async with asyncio.timeout(client.timeout):  # a stalled Redis: give up this tick
                replies = await client.execute(commands)
            refused = next((r for r in replies if isinstance(r, hiredis.ReplyError)), None)
            if refused is not None:
                raise RespError(f"Redis refused a topic table write: {refused}")
        else:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            await pipe.execute()


# ------------------------------------------------------------------ reading (the admin)
def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def read_top(client: Any, keys: TopicKeys, order: str, descending: bool,
             count: int) -> tuple[int, list[tuple[str, float]]]:
    """(groups in the table, the first ``count`` (group, score) pairs in ``order``)."""
    key = keys.ordered_by(order)
    pipe = client.pipeline(transaction=False)
    pipe.zcard(key)
    if count > 0:
        (pipe.zrevrange if descending else pipe.zrange)(key, 0, count - 1, withscores=True)
    results = pipe.execute()
    pairs = results[1] if count > 0 else []
    return results[0], [(_text(g), float(s)) for g, s in pairs]


def read_matching(client: Any, keys: TopicKeys, order: str, needle: str,
                  limit: int) -> tuple[list[tuple[str, float]], bool]:
    """Every (group, score) whose name contains ``needle``, up to ``limit``; and whether the
    limit cut the scan short."""
    found: list[tuple[str, float]] = []
    pattern = f"*{glob_escape(needle)}*"
    for group, score in client.zscan_iter(keys.ordered_by(order), match=pattern,
                                          count=SCAN_COUNT):
        if len(found) >= limit:
            return found, True
        found.append((_text(group), float(score)))
    return found, False


def read_rows(client: Any, keys: TopicKeys, groups: Sequence[str]) -> dict[str, TopicRow]:
    """The rows of ``groups`` (one HMGET); a group that vanished meanwhile is left out."""
    if not groups:
        return {}
    values = client.hmget(keys.info, list(groups))
    return {g: TopicRow.decode(v) for g, v in zip(groups, values, strict=True) if v is not None}


def rows_in_memory(table: TopicTable, groups: Mapping[str, Any]) -> Iterable[TopicRow]:
    """The rows of an in-process topic server (the embedded cluster has no Redis)."""
    return (table.row(name, state) for name, state in groups.items())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

