"""Which topic servers are in the ring: the one rule every node applies the same way.

A running topic server holds a *lease*: the key ``<prefix>:live:<node>`` in its own Redis,
holding its boot, renewed every heartbeat with a time to live of ``ts_failover_after``. A topic
server is *down* when its own Redis answers and the key is gone: it has not renewed it for
``ts_failover_after`` seconds (killed, paused, hung). Every node (WS nodes, topic servers, and
processes without a node) reads the same keys from the same Redis, so they all reach the same
ring, within one heartbeat of each other; Redis' own clock decides, never a node's.

A Redis that does not answer proves nothing: the server behind it is kept in the ring. That is
what a partition between a WS node and a topic server needs (both ends stay in one ring, and
the cut link gives error replies, see ``test_partition``); a topic server whose host is lost
entirely stays in the ring until the operator removes it from the cluster file.

The ring of a cluster is then the topic servers of the cluster file that are not down, or all
of them when every one is down (nothing better to route to; their backlogs hold what comes).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from channel_layer.ring import Ring
from channel_layer.transport import LEASE_UNKNOWN


def down_servers(configured: Iterable[str], leases: Mapping[str, object],
                 previously_down: set[str]) -> set[str]:
    """The configured servers that are down, given their leases (unknown: as before)."""
    down = set()
    for node in configured:
        holder = leases.get(node, LEASE_UNKNOWN)
        if holder is LEASE_UNKNOWN:
            if node in previously_down:
                down.add(node)
        elif holder is None:
            down.add(node)
    return down


def live_ring(configured: Iterable[str], down: set[str], current: Ring | None = None) -> Ring:
    """The ring of the configured servers less those down; ``current`` itself when it already
    has those servers (this runs every heartbeat on every node, and building a ring hashes
    every point of it: that was a topic server's top item between publishes)."""
    configured = tuple(configured)
    live = [node for node in configured if node not in down] or list(configured)
    if current is not None and current.nodes == Ring.normalized(live):
        return current
    return Ring(live)


def ring_id(ring: Ring) -> str:
    """How nodes compare their rings (in SYNC): the servers' names, in order."""
    return ",".join(ring.nodes)
