"""The group registry of a topic server: which WS nodes hold members of each group it owns,
how many, which plain channels are in it, and which WS nodes it knows. Pure: no I/O, no clock
(every rule takes ``now``), no logging; the server acts on what the rules return.

The rules:

- a group exists while a WS node has members in it or a plain channel is in it;
- a sign of life from a WS node this server does not know makes a new record (the server then
  asks it for a snapshot); one from a new boot of a known node replaces the old boot's
  memberships (a restarted process starts clean);
- a snapshot replaces the node's memberships of the groups it covers, keeping the state
  (message counts) of groups that stay;
- a WS node silent for ``node_timeout`` loses its memberships; a plain channel's membership ends
  ``group_expiry`` after it joined (the Channels spec's group expiry).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass
class GroupState:
    members: dict[str, int] = field(default_factory=dict)  # WS node -> its local member count
    # Plain channels in the group (their membership lives here, see channel_layer.membership):
    # channel -> (joined at, its capacity).
    plain: dict[str, tuple[float, int]] = field(default_factory=dict)
    messages: int = 0
    created: float = field(default_factory=time.time)  # (the registry passes ``now``)
    last_activity: float = field(default_factory=time.time)


@dataclass
class WsNodeState:
    boot: str
    last_seen: float
    synced: bool = False
    ring: str | None = None  # the ring its last snapshot was sent under (liveness.ring_id)


class Sighting(NamedTuple):
    state: WsNodeState
    new: bool  # a node this server did not know: ask it for a snapshot
    replaced_boot: str | None  # the previous boot of a node that restarted


def _ignore(*_: object) -> None:
    return None


class GroupRegistry:
    def __init__(self, touched: Callable[[str], None] = _ignore,
                 node_left: Callable[[str, str], None] = _ignore) -> None:
        self.groups: dict[str, GroupState] = {}
        self.ws_nodes: dict[str, WsNodeState] = {}
        self._touched = touched  # (group): its row of the topic table changed
        self._node_left = node_left  # (ws_node, group): it has no members there any more

    # ---------------------------------------------------------------------- WS nodes
    def see(self, ws_node: str, boot: str, now: float) -> Sighting:
        """Record a sign of life of ``ws_node`` running as ``boot``."""
        state = self.ws_nodes.get(ws_node)
        new, replaced = state is None, None
        if state is None:
            state = self.ws_nodes[ws_node] = WsNodeState(boot, now)
        elif state.boot != boot:
            replaced = state.boot
            self.drop_node_members(ws_node)
            state = self.ws_nodes[ws_node] = WsNodeState(boot, now, synced=True)
        state.last_seen = now
        return Sighting(state, new, replaced)

    def bye(self, ws_node: str, boot: str) -> bool:
        """A node's process stopped: forget it, if ``boot`` is still the one known."""
        state = self.ws_nodes.get(ws_node)
        if state is None or state.boot != boot:
            return False
        self.drop_node_members(ws_node)
        del self.ws_nodes[ws_node]
        return True

    def excuse(self, now: float) -> None:
        """Judge every WS node's silence from ``now`` (this server itself did not run)."""
        for state in self.ws_nodes.values():
            state.last_seen = max(state.last_seen, now)

    def expire_silent_nodes(self, now: float, node_timeout: float) -> list[tuple[str, float]]:
        """Forget the WS nodes silent for over ``node_timeout``; each with its silence."""
        expired = []
        for ws_node, state in list(self.ws_nodes.items()):
            if now - state.last_seen > node_timeout:
                expired.append((ws_node, now - state.last_seen))
                self.drop_node_members(ws_node)
                del self.ws_nodes[ws_node]
        return expired

    def all_synced(self, ws_nodes: Iterable[str], ring: str) -> bool:
        """Every one of ``ws_nodes`` has sent a snapshot under ``ring`` (one never heard from
        counts as not synced)."""
        for name in ws_nodes:
            state = self.ws_nodes.get(name)
            if state is None or not state.synced or state.ring not in (None, ring):
                return False
        return True

    # ---------------------------------------------------------------------- members
    def set_count(self, group: str, ws_node: str, count: int, now: float) -> None:
        self._touched(group)
        if count > 0:
            state = self.groups.get(group)
            if state is None:
                state = self.groups[group] = GroupState(created=now, last_activity=now)
            state.members[ws_node] = count
        else:
            self._node_left(ws_node, group)
            state = self.groups.get(group)
            if state is not None:
                state.members.pop(ws_node, None)
                self._forget_if_empty(group, state)

    def drop_node_members(self, ws_node: str) -> None:
        for group in [g for g, s in self.groups.items() if ws_node in s.members]:
            self.set_count(group, ws_node, 0, 0.0)

    def apply_snapshot(self, ws_node: str, snapshot: Mapping[str, int],
                       covers: Callable[[str], bool], now: float) -> None:
        """``ws_node``'s memberships of the groups ``covers`` are ``snapshot``; groups it does
        not cover stay as they are (another server's under the sender's ring)."""
        for group in [g for g, s in self.groups.items() if ws_node in s.members
                      and g not in snapshot and covers(g)]:
            self.set_count(group, ws_node, 0, now)
        for group, count in snapshot.items():
            self.set_count(group, ws_node, int(count), now)

    def member_count(self) -> int:
        return sum(sum(s.members.values()) for s in self.groups.values())

    # ---------------------------------------------------------------------- plain channels
    def plain_join(self, group: str, channel: str, joined_at: float, capacity: int,
                   now: float) -> None:
        state = self.groups.get(group)
        if state is None:
            state = self.groups[group] = GroupState(created=now, last_activity=now)
        state.plain[channel] = (joined_at, int(capacity))

    def plain_leave(self, group: str, channel: str) -> None:
        state = self.groups.get(group)
        if state is not None:
            state.plain.pop(channel, None)
            self._forget_if_empty(group, state)

    def expire_plain_members(self, now: float, group_expiry: float) -> int:
        """End the plain memberships older than ``group_expiry``; how many."""
        horizon = now - group_expiry
        expired = 0
        for group, state in list(self.groups.items()):
            for channel in [c for c, (joined, _) in state.plain.items() if joined < horizon]:
                del state.plain[channel]
                expired += 1
            self._forget_if_empty(group, state)
        return expired

    def take_plain_members(self, keep: Callable[[str], bool]
                           ) -> list[tuple[str, str, float, int]]:
        """Remove and return the plain memberships (group, channel, joined, capacity) of the
        groups ``keep`` does not keep (another server owns them now)."""
        taken = []
        for group, state in list(self.groups.items()):
            if keep(group) or not state.plain:
                continue
            taken += [(group, channel, joined, capacity)
                      for channel, (joined, capacity) in state.plain.items()]
            state.plain.clear()
            self._forget_if_empty(group, state)
        return taken

    # ---------------------------------------------------------------------- groups
    def drop_groups(self, keep: Callable[[str], bool]) -> list[str]:
        """Forget the groups ``keep`` does not keep; which."""
        dropped = [g for g in self.groups if not keep(g)]
        for group in dropped:
            del self.groups[group]
        return dropped

    def clear(self) -> None:
        self.groups.clear()

    def _forget_if_empty(self, group: str, state: GroupState) -> None:
        if not state.members and not state.plain:
            del self.groups[group]  # forget groups nobody is in
