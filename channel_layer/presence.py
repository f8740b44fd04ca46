"""Presence at a group's owner: who is in each group, the one source of truth for every node.

A WS node tracks a member with its JOIN (``[key, ref, meta]``: the presence key, a unique
reference for this track, a JSON-able meta dict) and untracks it with an ``UNTRACK`` envelope
when the member leaves; both travel in the owner's inbox order with the node's other
membership changes. Entries are tied to the WS node that tracked them: a node that dies,
restarts or says BYE loses them, and a node's snapshot (SYNC) replaces them, which is how a
restarted or new owner rebuilds the state without clients rejoining.

The state is Phoenix's: ``{key: {"metas": [{"phx_ref": ref, **meta}, ...]}}``, and changes go
out as Phoenix's diffs ``{"joins": state, "leaves": state}``. Diffs are coalesced per group:
changes accumulate and leave as one diff per group at most every ``presence_interval``
seconds (a track and untrack of one ref in the same window cancel out), so a storm of N joins
costs about ``storm duration / presence_interval`` diffs per member, not N. A member's join
answer carries the state *as last sent* (current state minus the pending diff), and the pending
diff follows it, so every member's state is exactly the owner's once the diff arrives. That
state changes only when a diff leaves, so it is encoded to JSON once per group and flush and
shared by every join answer until the next one (a storm's joiners do not cost the owner a
state each). After a
SYNC tells the owner of a group it did not know (after its restart, a failover or a ring
change), the next flush sends the whole state instead of a diff (phoenix.js reconciles a
fresh ``presence_state`` with what it has), which also covers entries a dead node held that
the new owner never knew.

Messages to members (Channels messages, delivered like any group message)::

    {"type": "presence.diff",  "group": g, "payload": "<JSON of {joins, leaves}>"}
    {"type": "presence.state", "group": g, "payload": "<JSON of the state>"}

A presence update is a track whose meta names the ref it replaces (``phx_ref_prev``), as
Phoenix's ``Presence.update`` has it: the owner untracks that ref in the same step, so one diff
carries both, the old meta in its leaves and the new one in its joins.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DIFF_TYPE = "presence.diff"
STATE_TYPE = "presence.state"

Entry = tuple[str, dict]  # (key, meta)


def as_state(entries: dict[str, Entry]) -> dict[str, dict[str, list[dict]]]:
    """``{ref: (key, meta)}`` in Phoenix's format."""
    state: dict[str, dict[str, list[dict]]] = {}
    for ref, (key, meta) in entries.items():
        state.setdefault(key, {"metas": []})["metas"].append({**meta, "phx_ref": ref})
    return state


@dataclass
class GroupPresence:
    entries: dict[str, Entry] = field(default_factory=dict)    # ref -> (key, meta)
    nodes: dict[str, str] = field(default_factory=dict)        # ref -> the WS node holding it
    joins: dict[str, Entry] = field(default_factory=dict)      # not yet sent
    leaves: dict[str, Entry] = field(default_factory=dict)     # not yet sent
    resend_state: bool = False                                 # a snapshot changed it
    sent_json: str | None = None  # the state as last sent, encoded (None: not yet)

    def sent_state_json(self) -> str:
        """What members have been told so far (the state without the pending diff), as JSON."""
        if self.sent_json is None:
            sent = {ref: e for ref, e in self.entries.items() if ref not in self.joins}
            sent.update(self.leaves)
            self.sent_json = json.dumps(as_state(sent))
        return self.sent_json


class PresenceBook:
    """Every presence entry of the groups one topic server owns."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupPresence] = {}
        self.changed: set[str] = set()  # groups with something to send

    def __len__(self) -> int:
        return sum(len(g.entries) for g in self.groups.values())

    def track(self, group: str, ws_node: str, key: str, ref: str, meta: dict) -> None:
        """Track ``ref``. A meta whose ``phx_ref_prev`` names an entry of the same key and WS
        node is Phoenix's presence update: that entry is untracked in the same step, so the
        next diff carries both (the old meta in its leaves, the new one in its joins)."""
        state = self.groups.setdefault(group, GroupPresence())
        if ref in state.entries:
            return  # the same track again (a resent JOIN): nothing changes
        previous = meta.get("phx_ref_prev") if isinstance(meta, dict) else None
        replaced = state.entries.get(previous) if isinstance(previous, str) else None
        if replaced is not None and replaced[0] == str(key) \
                and state.nodes.get(previous) == ws_node:
            self.untrack(group, previous)
        state.entries[ref] = (str(key), meta if isinstance(meta, dict) else {})
        state.nodes[ref] = ws_node
        if state.leaves.pop(ref, None) is None:
            state.joins[ref] = state.entries[ref]
        self.changed.add(group)

    def untrack(self, group: str, ref: str) -> None:
        state = self.groups.get(group)
        if state is None or ref not in state.entries:
            return
        entry = state.entries.pop(ref)
        del state.nodes[ref]
        if state.joins.pop(ref, None) is None:  # a join nobody heard of needs no leave
            state.leaves[ref] = entry
        self.changed.add(group)

    def drop_node(self, ws_node: str, groups: set[str] | None = None) -> None:
        """Forget what ``ws_node`` tracked (in ``groups``, or everywhere)."""
        for group in list(self.groups if groups is None else groups):
            state = self.groups.get(group)
            if state is None:
                continue
            for ref in [r for r, n in state.nodes.items() if n == ws_node]:
                self.untrack(group, ref)

    def replace_node(self, ws_node: str, snapshot: dict[str, list],
                     covers: Callable[[str], bool] = lambda group: True) -> None:
        """A node's snapshot ``{group: [[key, ref, meta], ...]}`` replaces what it tracked in
        the groups it ``covers``; a group this owner learns of from it gets the whole state
        next (its members may hold entries of an earlier owner: see the module docstring),
        the others a diff."""
        held = {g for g, s in self.groups.items() if ws_node in s.nodes.values() and covers(g)}
        for group in held | set(snapshot):
            state = self.groups.get(group)
            new = state is None
            before = {r for r, n in state.nodes.items() if n == ws_node} if state else set()
            after = {entry[1] for entry in snapshot.get(group, ())}
            for ref in before - after:
                self.untrack(group, ref)
            for key, ref, meta in snapshot.get(group, ()):
                if ref not in before:
                    self.track(group, ws_node, key, ref, meta)
            if new and after:
                self.groups[group].resend_state = True

    def state_json(self, group: str) -> str:
        """The state a new member starts from, as JSON: as last sent (its pending diff
        follows)."""
        state = self.groups.get(group)
        return state.sent_state_json() if state is not None else "{}"

    def current(self, group: str) -> dict[str, Any]:
        """The owner's state now (``topics.api.presence``)."""
        state = self.groups.get(group)
        return as_state(state.entries) if state is not None else {}

    def take_messages(self) -> list[tuple[str, dict]]:
        """The pending diff (or whole state) of every changed group, as group messages, and
        forget groups nobody is present in any more."""
        messages = []
        for group in self.changed:
            state = self.groups.get(group)
            if state is None:
                continue
            if state.resend_state:
                messages.append((group, {"type": STATE_TYPE, "group": group,
                                         "payload": json.dumps(as_state(state.entries))}))
            elif state.joins or state.leaves:
                diff = {"joins": as_state(state.joins), "leaves": as_state(state.leaves)}
                messages.append((group, {"type": DIFF_TYPE, "group": group,
                                         "payload": json.dumps(diff)}))
            state.joins, state.leaves, state.resend_state = {}, {}, False
            state.sent_json = None
            if not state.entries:
                del self.groups[group]
        self.changed.clear()
        return messages

    def drop_group(self, group: str) -> None:
        """Forget a group silently: another owner has it now (its members say nothing)."""
        self.groups.pop(group, None)
        self.changed.discard(group)

    def clear(self) -> None:
        self.groups.clear()
        self.changed.clear()
