"""The topic server: owner of the groups the ring gives it.

For every group it owns it knows which WS nodes hold members and how many, and turns each
publish into **one** delivery per such WS node (the Manifold idea), never one per member. It
reads its inbox in order, one envelope at a time, so every member of a group sees the same
order. Membership is tied to the WS node that holds it: a WS node that falls silent for
``node_timeout`` loses its memberships; a WS node that restarts replaces them; a topic server
that restarts asks every WS node for a snapshot (RESYNC / SYNC) instead of waiting for clients
to rejoin.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from . import wire
from .cluster import Cluster, ClusterConfigError, ClusterFileWatcher
from .outbox import Outbox
from .ring import Ring
from .settings import LayerSettings
from .transport import Transport, TransportError

logger = logging.getLogger("channel_layer.topic_server")


@dataclass
class GroupState:
    members: dict[str, int] = field(default_factory=dict)  # WS node -> its local member count
    messages: int = 0
    created: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)


@dataclass
class WsNodeState:
    boot: str
    last_seen: float
    synced: bool = False


class TopicServer:
    def __init__(self, cluster: Cluster, node: str, transport: Transport,
                 settings: LayerSettings | None = None) -> None:
        self.cluster = cluster
        self.node = node
        self.transport = transport
        self.settings = settings or LayerSettings()
        self.ring = Ring(n.name for n in cluster.ts_nodes)
        self.boot = os.urandom(6).hex()
        self.started = time.time()
        self.groups: dict[str, GroupState] = {}
        self.ws_nodes: dict[str, WsNodeState] = {}
        self.counters: Counter[str] = Counter()
        self._outboxes: dict[str, Outbox] = {}
        self._warm_until = 0.0
        self._held: list[list] = []  # publishes held back while WS nodes resync after a start
        self._watcher = ClusterFileWatcher(cluster)
        self._handlers = {
            wire.PUBLISH: self._publish_or_hold,
            wire.MEMBER: self.handle_member,
            wire.HELLO: self.handle_hello,
            wire.SYNC: self.handle_sync,
            wire.BYE: self.handle_bye,
            wire.WAKE: wire.ignore,
        }

    # ----------------------------------------------------------------------------- running
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; the current batch always completes first."""
        logger.info("topic server %s starting (boot %s)", self.node, self.boot)
        self._request_resync_from_all()
        self._warm_until = time.monotonic() + self.settings.startup_sync_timeout
        loop = asyncio.get_running_loop()
        housekeeping = loop.create_task(self._housekeeping(stop))
        waker = loop.create_task(self._wake_reader_on(stop))
        try:
            while not stop.is_set():
                block = min(self.settings.read_block_ms, 200) if self._held else \
                    self.settings.read_block_ms
                try:
                    entries = await self.transport.read(self.node, self.settings.read_batch,
                                                        block)
                except TransportError as exc:
                    # Our own Redis is down or restarting: keep trying; what senders publish
                    # meanwhile waits in the backlog once Redis is back.
                    self.counters["inbox_read_errors"] += 1
                    logger.warning("cannot read the inbox of %s: %s", self.node, exc)
                    await asyncio.sleep(self.settings.read_retry_interval)
                    continue
                now = time.time()
                for _, data in entries:
                    self.handle(data, now)
                self._release_held_if_warm()
                await self._flush()
        finally:
            housekeeping.cancel()
            waker.cancel()
            # Stop receiving first (publishes from now on wait in the backlog for the next
            # run), then handle what had already been pushed to this run.
            for _, data in await self.transport.stop_reading(self.node):
                self.handle(data, time.time())
            self._warm_until = 0.0  # stopping: fan out what was held for the resync, now
            self._release_held_if_warm()
            await self._flush()
            await self.transport.ack(self.node)  # a clean restart re-reads nothing
            await self._publish_stats()
            logger.info("topic server %s stopped", self.node)

    async def _wake_reader_on(self, stop: asyncio.Event) -> None:
        """Stop promptly: end the blocking inbox read with an entry of our own."""
        await stop.wait()
        try:
            await self.transport.push(self.node, [wire.encode([wire.WAKE])])
        except Exception as exc:  # the read times out by itself anyway
            logger.debug("could not wake the inbox reader: %s", exc)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        interval = min(self.settings.heartbeat_interval, self.settings.stats_interval)
        last_stats = 0.0
        while not stop.is_set():
            await asyncio.sleep(interval)
            self._follow_cluster_file()
            self.expire_silent_nodes(time.time())
            if time.monotonic() - last_stats >= self.settings.stats_interval:
                last_stats = time.monotonic()
                try:
                    await self._publish_stats()
                except Exception as exc:  # stats are best effort; serving is not
                    logger.warning("could not publish stats: %s", exc)

    async def _flush(self) -> None:
        for outbox in self._outboxes.values():
            await outbox.drain()

    def _outbox(self, node: str) -> Outbox:
        outbox = self._outboxes.get(node)
        if outbox is None:
            outbox = self._outboxes[node] = Outbox(self.transport, node)
        return outbox

    # --------------------------------------------------------------------------- envelopes
    def handle(self, data: bytes, now: float) -> None:
        """Apply one inbox envelope. Bad input is counted and skipped, never fatal."""
        wire.dispatch(data, self._handlers, self.counters, now)

    def _publish_or_hold(self, envelope: list, now: float) -> None:
        if self._held or time.monotonic() < self._warm_until and not self._all_synced():
            self._held.append(envelope)
        else:
            self.handle_publish(envelope, now)

    def handle_publish(self, envelope: list, now: float) -> None:
        _, group, expires_at, _message = envelope
        state = self.groups.get(group)
        self.counters["published"] += 1
        if state is None:
            self.counters["published_no_members"] += 1
            return
        if expires_at < now:
            self.counters["expired"] += 1
            return
        state.messages += 1
        state.last_activity = now
        # Encoded once, whatever the number of WS nodes; the message bytes are not decoded.
        delivery = wire.encode([wire.GROUP_DELIVER, group, expires_at, envelope[3]])
        for ws_node in state.members:
            self._outbox(ws_node).put(delivery)
        self.counters["node_deliveries"] += len(state.members)

    def handle_member(self, envelope: list, now: float) -> None:
        _, group, ws_node, boot, count = envelope
        self._see(ws_node, boot, now)
        self._set_count(group, ws_node, int(count), now)

    def handle_hello(self, envelope: list, now: float) -> None:
        _, ws_node, boot = envelope
        self._see(ws_node, boot, now)

    def handle_sync(self, envelope: list, now: float) -> None:
        _, ws_node, boot, _ts, snapshot = envelope
        state = self._see(ws_node, boot, now)
        # Replace this node's memberships with the snapshot, keeping the state (counters) of
        # groups that stay.
        for group in [g for g, s in self.groups.items() if ws_node in s.members
                      and g not in snapshot]:
            self._set_count(group, ws_node, 0, now)
        for group, count in snapshot.items():
            self._set_count(group, ws_node, int(count), now)
        state.synced = True
        self.counters["syncs"] += 1

    def handle_bye(self, envelope: list, now: float) -> None:
        _, ws_node, boot = envelope
        state = self.ws_nodes.get(ws_node)
        if state is not None and state.boot == boot:
            self._drop_node_members(ws_node)
            del self.ws_nodes[ws_node]

    # -------------------------------------------------------------------------- membership
    def _see(self, ws_node: str, boot: str, now: float) -> WsNodeState:
        """Record a sign of life; a new process behind a node name replaces the old one's
        memberships, and a node this server has not heard from is asked for a snapshot."""
        state = self.ws_nodes.get(ws_node)
        if state is None:
            state = self.ws_nodes[ws_node] = WsNodeState(boot, now)
            self._request_resync(ws_node)
        elif state.boot != boot:
            logger.info("WS node %s restarted; dropping the old process's memberships", ws_node)
            self._drop_node_members(ws_node)
            self.ws_nodes[ws_node] = state = WsNodeState(boot, now, synced=True)
        state.last_seen = now
        return state

    def _set_count(self, group: str, ws_node: str, count: int, now: float) -> None:
        if count > 0:
            state = self.groups.get(group)
            if state is None:
                state = self.groups[group] = GroupState(created=now, last_activity=now)
            state.members[ws_node] = count
        else:
            state = self.groups.get(group)
            if state is not None:
                state.members.pop(ws_node, None)
                if not state.members:
                    del self.groups[group]  # forget groups nobody is in

    def _drop_node_members(self, ws_node: str) -> None:
        for group in [g for g, s in self.groups.items() if ws_node in s.members]:
            self._set_count(group, ws_node, 0, 0.0)

    def expire_silent_nodes(self, now: float) -> None:
        for ws_node, state in list(self.ws_nodes.items()):
            if now - state.last_seen > self.settings.node_timeout:
                logger.warning("WS node %s silent for %.1fs; dropping its memberships",
                               ws_node, now - state.last_seen)
                self._drop_node_members(ws_node)
                del self.ws_nodes[ws_node]
                self.counters["nodes_expired"] += 1

    def _follow_cluster_file(self) -> None:
        # The WS nodes move memberships when the ring changes; the topic server only needs
        # to know the new node list (whom to ask for snapshots, which nodes exist).
        try:
            cluster = self._watcher.poll()
        except ClusterConfigError as exc:
            logger.error("ignoring the changed cluster file: %s", exc)
            return
        if cluster is not None:
            self.cluster = cluster
            self.transport.use_cluster(cluster)
            self.ring = Ring(n.name for n in cluster.ts_nodes)
            logger.info("cluster file changed; ring is now %s", list(self.ring.nodes))

    def _request_resync(self, ws_node: str) -> None:
        if self.cluster.has_node(ws_node):  # a name not in the cluster file has no inbox
            self._outbox(ws_node).put(wire.encode([wire.RESYNC, self.node, self.boot]))

    def _request_resync_from_all(self) -> None:
        for ws in self.cluster.ws_nodes:
            self._request_resync(ws.name)

    def _all_synced(self) -> bool:
        return all(
            (s := self.ws_nodes.get(ws.name)) is not None and s.synced
            for ws in self.cluster.ws_nodes
        )

    def _release_held_if_warm(self) -> None:
        if self._held and (self._all_synced() or time.monotonic() >= self._warm_until):
            held, self._held = self._held, []
            now = time.time()
            for envelope in held:
                self.handle_publish(envelope, now)

    # ------------------------------------------------------------------------------- stats
    def stats_snapshot(self) -> dict:
        top = sorted(self.groups.items(), key=lambda kv: kv[1].messages, reverse=True)
        return {
            "node": self.node,
            "boot": self.boot,
            "started": self.started,
            "updated": time.time(),
            "group_count": len(self.groups),
            "member_count": sum(sum(s.members.values()) for s in self.groups.values()),
            "ws_nodes": {name: {"last_seen": s.last_seen, "synced": s.synced}
                         for name, s in self.ws_nodes.items()},
            "counters": dict(self.counters + self.transport.counters),
            "groups": [
                {"group": name, "members": dict(s.members), "messages": s.messages,
                 "created": s.created, "last_activity": s.last_activity}
                for name, s in top[: self.settings.stats_top_groups]
            ],
        }

    async def _publish_stats(self) -> None:
        blob = json.dumps(self.stats_snapshot()).encode()
        ttl = max(5, int(self.settings.stats_interval * 5))
        await self.transport.put_stats(self.node, blob, ttl)
