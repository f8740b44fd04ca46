"""A node's inbox: the reader of the envelopes other nodes send it, and their handlers.

Deliveries reach the node's local members (a group's, decoded once for all of them; a
channel's); the topic servers' answers (JOINED), requests (RESYNC) and acknowledgements (ACK)
go to the membership and the owner links; other nodes' requests (MEMBERSHIP, FLUSH) are
applied and answered beside the reader, which never waits on them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from channel_layer import wire
from channel_layer.local_channels import LocalChannels, Wakeups
from channel_layer.membership import Membership
from channel_layer.owner_links import OwnerLinks
from channel_layer.peers import Peers
from channel_layer.sequencing import DeliveryFilter
from channel_layer.settings import LayerSettings
from channel_layer.transport import Transport, TransportError

logger = logging.getLogger("channel_layer.runtime")
# The key a group message with history carries: its [offset, epoch] at the owner.
POSITION_KEY = "dps_position"


class NodeInbox:
    def __init__(self, node: str, settings: LayerSettings, counters: Counter,
                 transport: Transport, membership: Membership, local: LocalChannels,
                 deliveries: DeliveryFilter, links: OwnerLinks, peers: Peers,
                 deliver_local: Callable[[str, float, dict, Wakeups], bool],
                 flush_local: Callable[[], None]) -> None:
        self.node = node
        self.settings = settings  # a newer layer instance may replace it (reconfigure)
        self.counters = counters
        self.transport = transport
        self.membership = membership
        self.local = local
        self.deliveries = deliveries  # what was delivered already, by identity
        self.links = links
        self.peers = peers
        self._deliver_local = deliver_local
        self._flush_local = flush_local
        self.handlers = {
            wire.GROUP_DELIVER: self.deliver_group,
            wire.CHANNEL: self.deliver_channel,
            wire.RESYNC: self.resync_requested,
            wire.ACK: self.acknowledged,
            wire.JOINED: self.joined,
            wire.MEMBERSHIP: self.membership_requested,
            wire.FLUSH: self.flush_requested,
            wire.WAKE: wire.ignore,
        }

    async def read(self, stop: asyncio.Event) -> None:
        """Read and handle the inbox until ``stop`` is set."""
        node = self.node
        settings = self.settings
        reader = asyncio.current_task()
        while not stop.is_set():
            if reader.cancelling():
                # A cancel that a library swallowed (Python 3.11's wait_for can, when it races
                # a completing connect): honour it, or a closing loop waits for us forever.
                raise asyncio.CancelledError
            try:
                entries = await self.transport.read(node, settings.read_batch,
                                                    settings.read_block_ms)
            except TransportError as exc:
                if stop.is_set() or asyncio.current_task().cancelling():
                    return  # a read cut short by the shutdown, not a failing Redis
                self.counters["inbox_read_errors"] += 1
                logger.warning("cannot read inbox of %s: %s", node, exc)
                await asyncio.sleep(settings.read_retry_interval)
                continue
            if not entries:
                continue
            wake = Wakeups(self.counters)
            now = time.time()
            for _, data in entries:
                wire.dispatch(data, self.handlers, self.counters, now, wake)
            wake.fire()

    # ------------------------------------------------------------------------ deliveries
    def deliver_group(self, delivery: wire.GroupDeliver, now: float, wake: Wakeups) -> None:
        identity, expires_at = delivery.identity, delivery.expires_at
        if identity is not None and not self.deliveries.first_time(identity):
            return  # a publish re-sent after its first owner died, which had fanned it out
        members = self.membership.members(delivery.group)
        if not members:
            self.counters["group_deliveries_without_members"] += 1
            return
        if expires_at < now:
            self.counters["expired"] += 1
            return
        # Decoded once for the node and shared by every local member (consumers must treat
        # a received message as read-only, as with any Channels layer that avoids copies).
        message = wire.decode_message(delivery.message)
        if delivery.position is not None:  # a group with history: [offset, epoch]
            message[POSITION_KEY] = delivery.position
        fastlanes = self.local.fastlanes
        for channel in members:  # all of them this node's own channels (see membership)
            lane = fastlanes.get(channel)
            if lane is not None:
                wake.call(lane, message)
            else:
                self._deliver_local(channel, expires_at, message, wake)
        self.counters["group_deliveries"] += 1

    def deliver_channel(self, delivery: wire.Channel, now: float, wake: Wakeups) -> None:
        if delivery.expires_at < now:
            self.counters["expired"] += 1
        else:
            self._deliver_local(delivery.channel, delivery.expires_at,
                                wire.decode_message(delivery.message), wake)

    # ------------------------------------------------------------------ topic servers
    def resync_requested(self, resync: wire.Resync, now: float, wake: Wakeups) -> None:
        self.links.answer_resync(resync.ts_node, resync.ts_boot)

    def acknowledged(self, ack: wire.Ack, now: float, wake: Wakeups) -> None:
        self.links.acknowledged(ack.ts_node, ack.ts_boot, ack.origin, ack.through)

    def joined(self, joined: wire.Joined, now: float, wake: Wakeups) -> None:
        states = joined.states
        for answer in joined.answers:
            if isinstance(answer, list):  # [token, response]: a join with options
                token, response = answer
                if "presence" in response:
                    response["presence"] = states[response["presence"]]
                self.membership.joined(token, response)
            else:
                self.membership.joined(answer)

    # ------------------------------------------------------------------ other nodes
    def membership_requested(self, request: wire.MembershipChange, now: float,
                             wake: Wakeups) -> None:
        group, channel = request.group, request.channel
        change = self.membership.add(group, channel, self.settings.confirm_timeout) \
            if request.op == "add" else self.membership.discard(group, channel)
        self.peers.spawn(self._apply_and_answer(change, request.reply))

    async def _apply_and_answer(self, change: Awaitable[None], reply: str) -> None:
        try:
            await change
            answer = None
        except TransportError as exc:
            answer = str(exc)
        await self.peers.answer(reply, answer)

    def flush_requested(self, flush: wire.Flush, now: float, wake: Wakeups) -> None:
        self._flush_local()
        self.peers.spawn_answer(flush.reply, None)
