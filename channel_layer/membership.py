"""This node's group membership: the authoritative list of which local channels are in which
group, and the rules that keep each group's owner in step with it.

A process channel (``specific.<node>!…``) is a member of a group at its own node only, whoever
calls ``group_add``: another process's call is forwarded to that node (see
``NodeRuntime.change_remote_membership``), so a channel is held in one place and delivered at
most once, and any process can remove it.

Registration (every join, not only a group's first member on this node): the node sends
``JOIN`` to the group's owner and the new member starts receiving only when the owner's
``JOINED`` answer comes back. The joins of one loop iteration travel to each owner as one
envelope (a join storm costs a few envelopes, not one per join). The answer travels behind
every delivery the owner sent before it, so a member never receives a message that the owner
had already fanned out when it joined: the owner's order decides, as it does for every member
(a Phoenix client never sees a message published before its join was acknowledged).
``group_add`` returns once the member is active, so a ``group_send`` started after it reaches
the member.

Leaving is immediate here (nothing more is delivered to a discarded member); the owner learns
the new count with the next heartbeat, or at once when the node's last member of a group goes.
A topic server that asks (RESYNC) gets a snapshot of every group it owns. On a ring change
every server of the new ring gets a snapshot; the old owner keeps this node's registrations
until the change has settled and then drops them itself (``TopicServer``), so a publish sent
to it by a node that has not noticed yet still reaches this node's members.

A join may carry options for the owner (``add(..., options)``, the layer's ``group_join``): a
presence track ``[key, ref, meta]`` and a history position to recover from; the owner's
response comes back with the JOINED answer. The node keeps each member's track (sent with the
JOIN, in every snapshot, untracked with an UNTRACK when the member goes), so a restarted or new
owner rebuilds presence from the snapshots (``channel_layer.presence``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from channel_layer import wire
from channel_layer.outbox import Outbox
from channel_layer.ring import Ring
from channel_layer.transport import TransportError

logger = logging.getLogger("channel_layer.membership")


class OwnerUnavailable(TransportError):
    """The group's owner did not confirm a join in time (it is down, paused or unreachable)."""


class _PendingJoin:
    __slots__ = ("group", "channel", "done", "options")

    def __init__(self, group: str, channel: str, done: asyncio.Future,
                 options: dict | None) -> None:
        self.group = group
        self.channel = channel
        self.done = done
        self.options = options


def _time_out(done: asyncio.Future, owner: str, group: str, timeout: float) -> None:
    if not done.done():
        done.set_exception(OwnerUnavailable(
            f"the owner {owner} of group {group!r} did not confirm the join within "
            f"{timeout:g}s"))


def _updates_track(current: list | None, options: dict) -> bool:
    """Whether ``options`` carry a presence track that replaces ``current`` (an update)."""
    track = options.get("presence")
    return (current is not None and track is not None and isinstance(track[2], dict)
            and track[2].get("phx_ref_prev") == current[1])


class Membership:
    def __init__(self, node: str | None, counters: Counter[str],
                 owner_of: Callable[[str], str], outbox: Callable[[str], Outbox]) -> None:
        self.node = node
        self.boot = ""
        self.counters = counters
        self._owner_of = owner_of
        self._outbox = outbox
        self.groups: dict[str, dict[str, float]] = {}  # group -> {active channel: joined at}
        self._pending: dict[int, _PendingJoin] = {}    # JOIN token -> the join waiting for it
        self._pending_token: dict[tuple[str, str], int] = {}  # (group, channel) -> its token
        self._pending_in: Counter[str] = Counter()     # group -> joins awaiting JOINED
        self._dirty: set[str] = set()                  # groups whose count the owner lacks
        self._next_token = 0
        self._unsent: dict[str, list[tuple[str, int]]] = {}  # owner -> (group, token) to send
        self.tracks: dict[str, dict[str, list]] = {}   # group -> {channel: [key, ref, meta]}

    # ----------------------------------------------------------------------------- reads
    def members(self, group: str) -> dict[str, float] | None:
        """The active members of ``group`` on this node (None or empty when there are none)."""
        return self.groups.get(group)

    def count(self, group: str) -> int:
        return len(self.groups.get(group, ())) + self._pending_in[group]

    def group_names(self) -> Iterable[str]:
        return set(self.groups) | {g for g, n in self._pending_in.items() if n}

    def __len__(self) -> int:
        return len(self.group_names())

    def snapshot_for(self, ts: str) -> dict[str, int]:
        """``{group: local member count}`` for every group ``ts`` owns (a SYNC's body)."""
        owner_of = self._owner_of
        return {g: self.count(g) for g in self.group_names() if owner_of(g) == ts}

    def presence_for(self, ts: str) -> dict[str, list]:
        """``{group: [track, ...]}`` for every tracked group ``ts`` owns (in a SYNC)."""
        owner_of = self._owner_of
        return {g: list(tracks.values()) for g, tracks in self.tracks.items()
                if tracks and owner_of(g) == ts}

    # ---------------------------------------------------------------------------- changes
    async def add(self, group: str, channel: str, timeout: float,
                  options: dict | None = None) -> dict | None:
        """Make ``channel`` a member once the owner confirms; the owner's response to
        ``options`` (None without options)."""
        members = self.groups.get(group)
        if members is not None and channel in members:
            members[channel] = time.time()  # renewed, as a repeated group_add does elsewhere
            if options is None:
                return None
            # Joining again with options (a Phoenix rejoin): the owner answers it again. A
            # presence update (the new track's phx_ref_prev names the current one) replaces
            # the current track at the owner in the same step, so no UNTRACK goes first
            # (its leave would reach members in a diff of its own).
            if not _updates_track(self.tracks.get(group, {}).get(channel), options):
                self._untrack(group, channel)
        token = self._pending_token.get((group, channel))
        if token is not None:  # the same join, already on its way
            return await asyncio.shield(self._pending[token].done)
        token = self._next_token = self._next_token + 1
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending[token] = _PendingJoin(group, channel, done, options)
        self._pending_token[(group, channel)] = token
        self._pending_in[group] += 1
        owner = self._owner_of(group)
        self._queue_join(owner, group, token)
        # A timer rather than wait_for: no task per join (a join storm is a hot path).
        timer = loop.call_later(timeout, _time_out, done, owner, group, timeout)
        try:
            return await done
        except BaseException:
            self._abandon(token)
            raise
        finally:
            timer.cancel()

    def _queue_join(self, owner: str, group: str, token: int) -> None:
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._send_joins)
        self._unsent.setdefault(owner, []).append((group, token))

    def reroute_pending(self, old_ring: Ring, new_ring: Ring) -> None:
        """After a ring change: joins still waiting for a server that no longer owns their
        group ask the new owner too (the first answer counts)."""
        for token, pending in self._pending.items():
            owner = new_ring.owner_of(pending.group)
            if old_ring.owner_of(pending.group) != owner:
                self._queue_join(owner, pending.group, token)

    def _send_joins(self) -> None:
        """One JOIN envelope per owner for every join queued since the last call."""
        unsent, self._unsent = self._unsent, {}
        for owner, joins in unsent.items():
            entries = []
            for group, token in joins:
                pending = self._pending.get(token)
                if pending is None:
                    continue
                if pending.options is None:
                    entries.append([group, self.count(group), token])
                    continue
                entries.append([group, self.count(group), token, pending.options])
                track = pending.options.get("presence")
                if track is not None:  # from now on the owner may hold it
                    self.tracks.setdefault(group, {})[pending.channel] = track
            if not entries:
                continue
            written = self._outbox(owner).put(
                wire.encode([wire.JOIN, self.node, self.boot, entries]), ack=True)
            written.add_done_callback(
                lambda w, tokens=[e[2] for e in entries]: self._join_not_written(w, tokens))

    def _join_not_written(self, written: asyncio.Future, tokens: list[int]) -> None:
        error = written.exception()  # retrieved either way: nobody else awaits it
        if error is None:
            return
        for token in tokens:  # fail those joins now rather than at the timeout
            pending = self._pending.get(token)
            if pending is not None and not pending.done.done():
                pending.done.set_exception(error)

    def joined(self, token: int, response: dict | None = None) -> None:
        """The owner's answer to a JOIN: the member is active from here on."""
        pending = self._pending.pop(token, None)
        if pending is None:
            return  # abandoned (timed out, discarded or flushed) meanwhile
        group = pending.group
        del self._pending_token[(group, pending.channel)]
        self._pending_in[group] -= 1
        members = self.groups.get(group)
        if members is None:
            members = self.groups[group] = {}
        if pending.channel in members:
            self._dirty.add(group)  # a rejoin: the owner counted this member twice
        members[pending.channel] = time.time()
        if not pending.done.done():
            pending.done.set_result(response)

    def _abandon(self, token: int) -> None:
        pending = self._pending.pop(token, None)
        if pending is not None:
            del self._pending_token[(pending.group, pending.channel)]
            self._pending_in[pending.group] -= 1
            self._dirty.add(pending.group)  # the owner may have counted it: send the truth
            self._untrack(pending.group, pending.channel)
            if not pending.done.done():
                pending.done.set_result(None)

    async def discard(self, group: str, channel: str) -> None:
        token = self._pending_token.get((group, channel))
        if token is not None:
            self._abandon(token)  # group_add then group_discard: not a member
        self._untrack(group, channel)
        members = self.groups.get(group)
        if members is not None and members.pop(channel, None) is not None and not members:
            del self.groups[group]
        if self.count(group):
            self._dirty.add(group)
            return
        self._dirty.discard(group)
        try:  # the last local member: the owner stops sending this group here at once
            await self._outbox(self._owner_of(group)).put(self._member_envelope(group, 0),
                                                          ack=True)
        except TransportError as exc:
            # The owner will be re-synced once its Redis answers again (the heartbeat sends
            # a snapshot after a failed write).
            logger.warning("could not unregister %s from its owner: %s", group, exc)

    def _untrack(self, group: str, channel: str) -> None:
        """The member's presence leaves at the owner, in order after its JOIN."""
        tracks = self.tracks.get(group)
        track = tracks.pop(channel, None) if tracks else None
        if track is None:
            return
        if not tracks:
            del self.tracks[group]
        self._outbox(self._owner_of(group)).put(
            wire.encode([wire.UNTRACK, self.node, self.boot, [[group, track[1]]]]))

    def expired(self, now: float, group_expiry: float) -> list[tuple[str, str]]:
        """Memberships older than ``group_expiry`` (the caller discards them)."""
        horizon = now - group_expiry
        return [(group, channel) for group, members in self.groups.items()
                for channel, joined in members.items() if joined < horizon]

    def clear(self) -> None:
        """Forget every membership (``flush``): the owners are flushed by the same call."""
        self.groups.clear()
        self.tracks.clear()
        for token in list(self._pending):
            self._abandon(token)
        self._dirty.clear()

    def forget_loop(self) -> None:
        """The loop the pending joins were waiting on is gone: so are they."""
        self._pending.clear()
        self._pending_token.clear()
        self._pending_in.clear()
        self._unsent.clear()

    # ------------------------------------------------------------------- owner messages
    def _member_envelope(self, group: str, count: int) -> bytes:
        return wire.encode([wire.MEMBER, group, self.node, self.boot, count])

    def sync_envelope(self, ts: str, ring: str, first_seq: int,
                      previous_ring: str | None) -> bytes:
        return wire.encode([wire.SYNC, self.node, self.boot, ts, self.snapshot_for(ts),
                            self.presence_for(ts), ring, first_seq, previous_ring])

    def flush_counts(self) -> None:
        """Tell owners the counts that changed since the last heartbeat (0: unregister)."""
        dirty, self._dirty = self._dirty, set()
        for group in dirty:
            self._outbox(self._owner_of(group)).put(
                self._member_envelope(group, self.count(group)))
