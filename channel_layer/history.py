"""History at a group's owner: the recent broadcasts of the groups whose name matches a
``history`` pattern, each with an offset, in the owner's own Redis.

Per group the owner's Redis holds a meta hash ``<prefix>:history-meta:<group>`` (``epoch``,
``offset``: the latest broadcast's) and a list ``<prefix>:history:<group>`` of msgpack
``[offset, published_at, message_bytes]``, trimmed to the pattern's ``size`` and expiring
``ttl`` seconds after the latest broadcast (the meta lives ``history_meta_ttl``). Offsets
increase by one per broadcast. The epoch is a random string that changes whenever the history
cannot be trusted: the meta is missing when a group is first loaded (new, expired, or its
Redis lost it) or disappears under a running owner (its Redis restarted empty); a client
holding a position of another epoch cannot recover.

The owner serves from memory (the last ``size`` broadcasts of the groups it has loaded, at
most ``history_cache_groups`` of them) and writes each batch's broadcasts to Redis before it
reads its next batch; a group it has not loaded (after a start, a failover or a ring change) is
read from Redis first: from its own, else from the other topic servers' (the previous owner's,
after a ring change), and copied into its own.
"""
from __future__ import annotations

import fnmatch
import itertools
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import msgpack
import redis.asyncio as aioredis

logger = logging.getLogger("channel_layer.history")

# KEYS: meta, list. ARGV: mode ("append": only onto our epoch; "reset": start it), epoch,
# offset, size, ttl, meta ttl, entries... Returns 0 when our epoch is gone (history lost).
_WRITE = """
if ARGV[1] == 'append' and redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
if ARGV[1] == 'reset' then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'offset', ARGV[3])
if #ARGV > 6 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 7)) end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""


@dataclass(frozen=True)
class HistoryPolicy:
    size: int
    ttl: float


class HistoryPatterns:
    """``{group glob: {"size": N, "ttl": seconds}}``: the first matching pattern wins."""

    def __init__(self, patterns: dict) -> None:
        self._patterns = []
        for pattern, spec in patterns.items():
            size, ttl = int(spec.get("size", 0)), float(spec.get("ttl", 0))
            if size < 1 or ttl <= 0:
                raise ValueError(f"history pattern {pattern!r} needs a size >= 1 and a ttl > 0")
            self._patterns.append((pattern, HistoryPolicy(size, ttl)))
        self.policy_of = lru_cache(maxsize=65536)(self._policy_of)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def _policy_of(self, group: str) -> HistoryPolicy | None:
        for pattern, policy in self._patterns:
            if fnmatch.fnmatchcase(group, pattern):
                return policy
        return None


def new_epoch() -> str:
    return os.urandom(4).hex()


@dataclass
class GroupHistory:
    policy: HistoryPolicy
    epoch: str
    offset: int = 0
    recent: deque = field(default_factory=deque)  # (offset, published_at, message bytes)
    unwritten: list = field(default_factory=list)  # the same, not in Redis yet
    reset: bool = True  # the next write starts this epoch in Redis


@dataclass(frozen=True)
class Recovery:
    recovered: bool
    messages: list  # (offset, message bytes), oldest first


class HistoryStore:
    def __init__(self, patterns: HistoryPatterns, prefix: str, meta_ttl: float,
                 cache_groups: int, own_client: Callable[[], aioredis.Redis | None],
                 other_clients: Callable[[], Iterable[aioredis.Redis]]) -> None:
        self.patterns = patterns
        self.prefix = prefix
        self.meta_ttl = meta_ttl
        self.cache_groups = cache_groups
        self._own = own_client
        self._others = other_clients
        self.groups: OrderedDict[str, GroupHistory] = OrderedDict()  # most recent last
        self._dirty: set[str] = set()
        self.counters = {"history_loads": 0, "history_lost": 0, "history_write_errors": 0}

    def keys(self, group: str) -> tuple[str, str]:
        return f"{self.prefix}:history-meta:{group}", f"{self.prefix}:history:{group}"

    # ------------------------------------------------------------------------- reads
    def needs_load(self, group: str) -> bool:
        return group not in self.groups and self.patterns.policy_of(group) is not None

    def loaded(self, group: str) -> GroupHistory | None:
        history = self.groups.get(group)
        if history is not None:
            self.groups.move_to_end(group)
        return history

    def position(self, group: str) -> dict | None:
        history = self.loaded(group)
        return None if history is None else {"offset": history.offset, "epoch": history.epoch}

    def since(self, group: str, offset: int, epoch: str, now: float) -> Recovery:
        """Every broadcast after ``offset`` if the history still holds them all."""
        history = self.loaded(group)
        if history is None or epoch != history.epoch or offset > history.offset:
            return Recovery(False, [])
        horizon = now - history.policy.ttl
        missed = [(o, data) for o, at, data in history.recent if o > offset and at >= horizon]
        complete = len(missed) == history.offset - offset
        return Recovery(complete, missed if complete else [])

    # ------------------------------------------------------------------------ writes
    def append(self, group: str, data: bytes, now: float) -> tuple[int, str] | None:
        """Record a broadcast (the group must be loaded); its (offset, epoch)."""
        history = self.loaded(group)
        if history is None:
            return None
        history.offset += 1
        entry = (history.offset, now, data)
        history.recent.append(entry)
        while len(history.recent) > history.policy.size:
            history.recent.popleft()
        history.unwritten.append(entry)
        self._dirty.add(group)
        return history.offset, history.epoch

    async def load(self, groups: set[str]) -> None:
        """Read ``groups`` from Redis (own, else another topic server's) into memory."""
        own = self._own()
        found: dict[str, tuple[str, int, list]] = {}
        if own is not None:
            try:
                found = await self._read(own, groups)
                missing = groups - set(found)
                for other in (self._others() if missing else ()):
                    for group, value in (await self._read(other, missing)).items():
                        if group not in found or value[1] > found[group][1]:
                            found[group] = value
            except Exception as exc:  # served from a new epoch: recovery says false
                self.counters["history_write_errors"] += 1
                logger.warning("could not read history from Redis: %s", exc)
        for group in groups:
            policy = self.patterns.policy_of(group)
            epoch, offset, entries = found.get(group, (new_epoch(), 0, []))
            history = GroupHistory(policy, epoch, offset, deque(entries[-policy.size:]))
            history.unwritten = list(history.recent)  # copied into our Redis as it is
            self.groups[group] = history
            self._dirty.add(group)
            self.counters["history_loads"] += 1
        excess = len(self.groups) - self.cache_groups
        if excess > 0:  # the least recently used, once written (a reload reads them back)
            for group in list(itertools.islice(
                    (g for g in self.groups if g not in self._dirty), excess)):
                del self.groups[group]

    async def _read(self, client: aioredis.Redis, groups: set[str]) -> dict:
        ordered = sorted(groups)
        async with client.pipeline(transaction=False) as pipe:
            for group in ordered:
                meta, entries = self.keys(group)
                pipe.hgetall(meta)
                pipe.lrange(entries, 0, -1)
            replies = await pipe.execute()
        found = {}
        for i, group in enumerate(ordered):
            meta, entries = replies[2 * i], replies[2 * i + 1]
            if meta.get(b"epoch"):
                found[group] = (meta[b"epoch"].decode(), int(meta.get(b"offset", 0)),
                                [tuple(msgpack.unpackb(e)) for e in entries])
        return found

    async def write(self) -> None:
        """Write every group's new broadcasts; a group whose epoch vanished from Redis gets
        a new epoch (its history is gone; what this batch added starts the new one)."""
        client = self._own()
        dirty, self._dirty = self._dirty, set()
        if client is None:
            for group in dirty:
                if group in self.groups:
                    self.groups[group].unwritten.clear()
            return
        for group in dirty:
            history = self.groups.get(group)
            if history is None:
                continue
            for attempt in (1, 2):  # a connection to a Redis that restarted fails once
                try:
                    await self._write_or_renew(client, group, history)
                    break
                except Exception as exc:
                    self.counters["history_write_errors"] += 1
                    if attempt == 2:
                        self._dirty.add(group)  # try again after the next batch
                        logger.warning("could not write the history of %s: %s", group, exc)

    async def _write_or_renew(self, client: aioredis.Redis, group: str,
                              history: GroupHistory) -> None:
        if not await self._write_group(client, group, history):
            self.counters["history_lost"] += 1
            logger.warning("history of %s was lost from Redis; new epoch", group)
            history.epoch, history.reset = new_epoch(), True
            history.recent = deque(history.unwritten)
            await self._write_group(client, group, history)
        history.unwritten.clear()
        history.reset = False

    async def _write_group(self, client: aioredis.Redis, group: str,
                           history: GroupHistory) -> bool:
        entries = [msgpack.packb(list(e), use_bin_type=True) for e in history.unwritten]
        return bool(await client.eval(
            _WRITE, 2, *self.keys(group), "reset" if history.reset else "append",
            history.epoch, history.offset, history.policy.size, max(1, int(history.policy.ttl)),
            max(1, int(self.meta_ttl)), *entries))

    def forget(self) -> None:
        self.groups.clear()
        self._dirty.clear()
