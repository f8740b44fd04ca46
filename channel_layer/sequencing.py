"""Exactly once across a topic server's death: sequence numbers, a replay log, a filter.

A WS node numbers the publishes it sends to each topic server (one counter per destination)
and keeps each one (``PublishLog``) until that server acknowledges it (``ACK``, once a
heartbeat, for what it has handled *and* written out). A publish answered ``ok`` is thus held
somewhere until it is fanned out:

- the topic server restarts (a new boot asks for a snapshot, RESYNC): the node re-sends its
  unacknowledged publishes behind the snapshot;
- the topic server fails over (it left the ring, see ``channel_layer.liveness``): the node
  re-sends them to the groups' new owners.

A re-sent publish may already have been fanned out by the server that died between its fan-out
and its acknowledgement. Every delivery therefore carries its *identity*, ``[origin, via,
seq]``: the node that published it (its name and boot: a restarted node numbers from 1), the
topic server it was first sent to and its number there, kept unchanged through every re-send.
One origin's publishes to one server are fanned out in their order, and a WS node drops a
delivery whose identity it has seen (``DeliveryFilter``).

Before re-sending, the node's snapshot (SYNC) tells the server the number of the first envelope
that follows it; the server ignores any publish of that origin numbered below it
(``OriginCursors``): copies in its backlog, or in flight before the snapshot, that the re-send
supersedes. Order is kept that way: nothing the server fans out jumps ahead of the re-sent.

Publishes from processes without a node (a Celery worker, a shell) carry no number: they are
delivered at most once (a topic server that dies with them unread loses them).
"""
from __future__ import annotations

from array import array
from collections import Counter, deque
from typing import NamedTuple


def origin_of(node: str, boot: str) -> str:
    return f"{node}/{boot}"


def node_of_origin(origin: str) -> str:
    return origin.partition("/")[0]


class Unacked(NamedTuple):
    seq: int
    group: str
    expires_at: float
    data: bytes
    identity: list  # [origin, via, seq] of its first send


class PublishLog:
    """A WS node's publishes per topic server, numbered, kept until acknowledged."""

    def __init__(self, origin: str, limit: int, counters: Counter[str],
                 byte_limit: int = 16 * 1024 * 1024) -> None:
        self.origin = origin
        self.limit = limit  # unacknowledged publishes kept per topic server (unacked_limit)
        self.byte_limit = byte_limit  # and their bytes (unacked_bytes_limit)
        self.counters = counters
        self._next: dict[str, int] = {}
        self._unacked: dict[str, deque[Unacked]] = {}
        self._bytes: Counter[str] = Counter()

    def next_seq(self, ts: str) -> int:
        return self._next.get(ts, 1)

    def record(self, ts: str, group: str, expires_at: float, data: bytes,
               identity: list | None = None) -> tuple[int, list]:
        """Number a publish to ``ts`` and keep it; its (seq, identity)."""
        seq = self._next.get(ts, 1)
        self._next[ts] = seq + 1
        if identity is None:
            identity = [self.origin, ts, seq]
        log = self._unacked.get(ts)
        if log is None:
            log = self._unacked[ts] = deque()
        log.append(Unacked(seq, group, expires_at, data, identity))
        self._bytes[ts] += len(data)
        while len(log) > self.limit or self._bytes[ts] > self.byte_limit and len(log) > 1:
            self._bytes[ts] -= len(log.popleft().data)  # no longer re-sent if its server dies
            self.counters["unacked_overflow"] += 1
        return seq, identity

    def forget(self, ts: str, seq: int) -> None:
        """A publish whose write failed (its sender got the error): never re-send it."""
        log = self._unacked.get(ts)
        if log:
            for index in range(len(log) - 1, -1, -1):
                if log[index].seq == seq:
                    self._bytes[ts] -= len(log[index].data)
                    del log[index]
                    return

    def acknowledged(self, ts: str, through: int) -> None:
        log = self._unacked.get(ts)
        while log and log[0].seq <= through:
            self._bytes[ts] -= len(log.popleft().data)

    def take(self, ts: str) -> list[Unacked]:
        """Every unacknowledged publish to ``ts``, oldest first, to be re-sent (and kept again
        under its new number by ``record``)."""
        log = self._unacked.pop(ts, None)
        self._bytes.pop(ts, None)
        return list(log) if log else []

    def pending(self, ts: str) -> int:
        return len(self._unacked.get(ts, ()))

    def destinations(self) -> list[str]:
        return [ts for ts, log in self._unacked.items() if log]


class OriginCursors:
    """A topic server's view of each origin's numbering: what it handled, what it may skip."""

    def __init__(self) -> None:
        self.expected: dict[str, int] = {}  # origin -> lowest number still to be handled
        self.flushed: dict[str, int] = {}   # origin -> handled and written out, through
        self._acked: dict[str, int] = {}    # origin -> through what the last ACK said

    def restart_at(self, origin: str, first_seq: int) -> None:
        """The origin's snapshot: what it sends next is numbered ``first_seq``."""
        self.expected[origin] = first_seq

    def admit(self, origin: str, seq: int) -> bool:
        """Whether to handle this publish (False: a copy the origin has re-sent since)."""
        expected = self.expected.get(origin)
        if expected is not None and seq < expected:
            return False
        self.expected[origin] = seq + 1
        return True

    def snapshot(self) -> dict[str, int]:
        """What is handled now (taken before the outboxes are drained)."""
        return dict(self.expected)

    def written(self, snapshot: dict[str, int]) -> None:
        """Everything of ``snapshot`` is written out: it may be acknowledged."""
        self.flushed.update(snapshot)

    def acks_due(self, at_least: int = 1) -> list[tuple[str, int]]:
        """(origin, through) for every origin with at least ``at_least`` publishes to
        acknowledge since the last ACK."""
        due = [(origin, expected - 1) for origin, expected in self.flushed.items()
               if expected - 1 - self._acked.get(origin, 0) >= at_least]
        for origin, through in due:
            self._acked[origin] = through
        return due

    def forget(self, origin: str) -> None:
        """An origin that restarted: its old numbers are done with."""
        for table in (self.expected, self.flushed, self._acked):
            table.pop(origin, None)

    def clear(self) -> None:
        self.expected.clear()
        self.flushed.clear()
        self._acked.clear()


class DeliveryFilter:
    """A WS node's record of the publishes it has received, by origin and first server.

    Exact within a window: the numbers seen among the last ``window`` of each (origin, first
    server), and everything older counts as seen. A publish forwarded or re-sent reaches this
    node through another server than the first one, so one (origin, server)'s numbers may
    arrive out of order; a highest-number rule would take a late one for a copy. A node
    receives only the publishes of groups it has members in, so the numbers it sees have gaps
    that never fill: the window is a fixed ring of slots (number % window holds the number),
    not a growing set.
    """

    def __init__(self, counters: Counter[str], window: int = 16_384) -> None:
        self.counters = counters
        self.window = window
        self._seen: dict[tuple[str, str], list] = {}  # key -> [highest, slots]

    def first_time(self, identity: list) -> bool:
        origin, via, seq = identity
        key = (origin, via)
        entry = self._seen.get(key)
        if entry is None:
            entry = self._seen[key] = [0, array("q", bytes(8 * self.window))]
        highest, slots = entry
        slot = seq % self.window
        if seq <= highest - self.window or slots[slot] == seq:
            self.counters["duplicates_dropped"] += 1
            return False
        slots[slot] = seq
        if seq > highest:
            entry[0] = seq
        return True
