"""Which topic servers are in the ring: the one rule every node applies the same way.

A running topic server holds a *lease*: the key ``<prefix>:live:<node>`` in its own Redis,
holding its boot, renewed every heartbeat with a time to live of ``ts_failover_after``; beside
it a key without expiry says that a lease of that server was ever held on that Redis. Every
node (WS nodes, topic servers, and processes without a node) reads the same keys from the same
Redis, so they all reach the same ring, within one heartbeat of each other; Redis' own clock
decides, never a node's. What a server's Redis says decides it:

- it holds a lease: *up*;
- the lease lapsed (it was held, and has not been renewed for ``ts_failover_after``: killed,
  paused, hung, or drained and given up): *down*;
- it never held one there (listed, but its process has not started or exited at start): *not
  started*, kept out of the ring like a server that is down, so its share stays with the
  servers that run instead of queueing for a process that may never come; it joins the ring
  when its lease appears. A node that has seen that server hold a lease before reads the same
  answer as its Redis having lost its keys (restarted without persistence): that proves
  nothing, and the server stays as it was until its next renewal says more;
- its Redis does not answer: that proves nothing, and the server stays as it was. That is what
  a partition between a WS node and a topic server needs (both ends stay in one ring, and the
  cut link gives error replies, see ``test_partition``); a topic server whose host is lost
  entirely stays in the ring until the operator removes it from the cluster file.

The ring of a cluster is then the topic servers of the cluster file that are neither down nor
not started, or all of them when none is left (nothing better to route to; their backlogs
hold what comes).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from channel_layer.ring import Ring
from channel_layer.transport import LEASE_NEVER_HELD, LEASE_UNKNOWN


def not_started(configured: Iterable[str], leases: Mapping[str, object],
                seen_leased: set[str]) -> set[str]:
    """The configured servers whose Redis never had their lease, that this node has never
    seen hold one (see the module's docstring)."""
    return {node for node in configured
            if leases.get(node) is LEASE_NEVER_HELD and node not in seen_leased}


def down_servers(configured: Iterable[str], leases: Mapping[str, object],
                 previously_down: set[str], seen_leased: set[str]) -> set[str]:
    """The configured servers to keep out of the ring, given their leases: those down and
    those not started (a Redis that proves nothing: as before)."""
    configured = tuple(configured)
    down = not_started(configured, leases, seen_leased)
    for node in configured:
        holder = leases.get(node, LEASE_UNKNOWN)
        if holder is LEASE_UNKNOWN or holder is LEASE_NEVER_HELD:
            if node in previously_down:
                down.add(node)
        elif holder is None:
            down.add(node)
    return down


def with_leases_seen(seen_leased: set[str], leases: Mapping[str, object]) -> set[str]:
    """``seen_leased`` and the servers that hold a lease in ``leases``."""
    return seen_leased | {node for node, holder in leases.items() if isinstance(holder, str)}


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
