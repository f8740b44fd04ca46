"""The consistent hash ring: which topic server owns a group.

A :class:`Ring` is an immutable value. A membership change builds a new ring (with an empty
lookup cache) and swaps it in, so readers never see a half-updated ring and never need a lock.
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from uhashring import HashRing

HASH_SPACE = 2 ** 128  # uhashring's ketama positions are md5 digests


class Ring:
    """Maps a full group name to the name of the topic-server node that owns it."""

    def __init__(self, ts_nodes: Iterable[str], cache_size: int = 65536) -> None:
        self.nodes: tuple[str, ...] = self.normalized(ts_nodes)
        if not self.nodes:
            raise ValueError("a ring needs at least one topic-server node")
        hash_ring = self._hash_ring = HashRing(nodes=list(self.nodes))
        # uhashring costs ~1 µs a lookup; group_send happens per publish, so cache the answer.
        # The cache belongs to this ring value and dies with it when membership changes.
        self.owner_of = lru_cache(maxsize=cache_size)(hash_ring.get_node)

    @staticmethod
    def normalized(ts_nodes: Iterable[str]) -> tuple[str, ...]:
        """The ``nodes`` of a ring of ``ts_nodes``: each once, in order."""
        return tuple(sorted(set(ts_nodes)))

    def position_of(self, group: str) -> int:
        """Where ``group`` hashes on the ring, in [0, HASH_SPACE): its owner is the node of the
        first point after it, clockwise."""
        return self._hash_ring.hashi(group)

    def points(self) -> list[tuple[int, str]]:
        """Every (position, node) point of the ring, in order; a point owns the arc from the
        point before it up to itself."""
        return self._hash_ring.get_points()

    def with_nodes(self, ts_nodes: Iterable[str]) -> Ring:
        """A new ring for a new membership (this one is left untouched)."""
        return Ring(ts_nodes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ring) and other.nodes == self.nodes

    def __hash__(self) -> int:
        return hash(self.nodes)

    def __repr__(self) -> str:
        return f"Ring({list(self.nodes)})"
