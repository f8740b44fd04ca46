"""The layer contract across processes: what channels_redis users rely on when several
processes share one layer (issue 14). Each test runs twice:

- ``memory``: the embedded default, where the "other processes" are further
  ``DPSChannelLayer`` instances of the same node in this process (Django makes one per alias,
  and again after ``override_settings``);
- ``redis``: real ``redis-server`` processes, two topic servers, layers acting as the WS nodes
  ws-a and ws-b, and a node-less sender (a view, a Celery task, a shell).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from channels.exceptions import ChannelFull

from channel_layer.layer import DPSChannelLayer
from channel_layer.settings import LayerSettings
from tests.support.inproc import TopicServerThread, cluster_of
from tests.support.waiting import await_until

WAIT = 5.0
QUICK = {"heartbeat_interval": 0.2, "startup_sync_timeout": 0.2, "capacity": 1000}


@dataclass
class Places:
    here: DPSChannelLayer    # where the channels under test live (ws-a)
    there: DPSChannelLayer   # another process of the cluster (ws-b), or another instance
    sender: DPSChannelLayer  # a process that is no node at all, or a third instance
    backend: str


@pytest.fixture(params=["memory", "redis"])
async def places(request, redis_factory):
    made: list[DPSChannelLayer] = []
    servers = None

    def layer(**kwargs) -> DPSChannelLayer:
        made.append(DPSChannelLayer(**QUICK, **kwargs))
        return made[-1]

    if request.param == "memory":
        result = Places(layer(), layer(), layer(), "memory")
    else:
        cluster = cluster_of({name: redis_factory().url
                              for name in ("ws-a", "ws-b", "ts-a", "ts-b")})
        servers = TopicServerThread(cluster, settings=LayerSettings(**QUICK)).start()
        result = Places(layer(cluster=cluster, node="ws-a"), layer(cluster=cluster, node="ws-b"),
                        layer(cluster=cluster), "redis")
    try:
        yield result
    finally:
        for each in made:
            await each.close()
        if servers is not None:
            servers.stop()


async def receive(layer, channel, timeout=WAIT):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def nothing_arrives(layer, channel, within=0.5):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), within)


async def wait_for_node_of(place: DPSChannelLayer) -> None:
    """A WS node's runtime starts with its first call; its inbox must be read before another
    process can ask it anything."""
    await place.new_channel()


# 1. Membership any process can change ------------------------------------------------------

async def test_group_discard_from_another_process_removes_the_member(places):
    channel = await places.here.new_channel()
    await places.here.group_add("kick", channel)
    await places.there.group_discard("kick", channel)
    await places.sender.group_send("kick", {"type": "after-kick"})
    await nothing_arrives(places.here, channel)
    # ... and one added back from elsewhere, then removed by a process that is no node.
    await places.there.group_add("kick", channel)
    await places.sender.group_send("kick", {"type": "back"})
    assert (await receive(places.here, channel))["type"] == "back"
    await places.sender.group_discard("kick", channel)
    await places.sender.group_send("kick", {"type": "gone"})
    await nothing_arrives(places.here, channel)


async def test_group_add_from_several_processes_delivers_once(places):
    await wait_for_node_of(places.there)
    channel = await places.here.new_channel()
    await places.here.group_add("twice", channel)
    await places.there.group_add("twice", channel)
    await places.sender.group_add("twice", channel)
    for i in range(3):
        await places.sender.group_send("twice", {"type": "m", "i": i})
    assert [(await receive(places.here, channel))["i"] for _ in range(3)] == [0, 1, 2]
    await nothing_arrives(places.here, channel)


async def test_plain_channel_in_a_group_is_delivered_once_and_any_process_removes_it(places):
    await places.here.group_add("workers", "plain-worker")
    await places.there.group_add("workers", "plain-worker")
    await places.sender.group_send("workers", {"type": "job", "n": 1})
    assert (await receive(places.sender, "plain-worker"))["n"] == 1
    await nothing_arrives(places.sender, "plain-worker", within=1.2)
    await places.sender.group_discard("workers", "plain-worker")
    await places.here.group_send("workers", {"type": "job", "n": 2})
    await nothing_arrives(places.sender, "plain-worker", within=1.2)


# 2. Late joiners -----------------------------------------------------------------------------

async def test_a_late_joiner_gets_nothing_sent_before_its_group_add(places):
    early = await places.here.new_channel()
    count = 300
    early_got: list[int] = []
    all_arrived = asyncio.Event()

    def take(message: dict) -> None:  # a member that keeps up with any rate
        early_got.append(message["i"])
        if len(early_got) == count + 1:
            all_arrived.set()

    places.here.add_fastlane(early, take)
    await places.here.group_add("causal", early)
    for i in range(count):
        await places.sender.group_send("causal", {"type": "m", "i": i})
    late = await places.here.new_channel()
    await places.here.group_add("causal", late)  # earlier sends may still be on their way
    await places.sender.group_send("causal", {"type": "m", "i": count})
    await asyncio.wait_for(all_arrived.wait(), WAIT)
    assert early_got == list(range(count + 1))
    assert (await receive(places.here, late))["i"] == count
    await nothing_arrives(places.here, late)


# 3. flush() is cluster-wide ------------------------------------------------------------------

async def test_flush_empties_every_process(places):
    ours, theirs = await places.here.new_channel(), await places.there.new_channel()
    await places.here.group_add("flushed", ours)
    await places.there.group_add("flushed", theirs)
    await places.here.send(theirs, {"type": "queued"})
    assert (await receive(places.there, theirs))["type"] == "queued"  # it does arrive ...
    await places.here.send(theirs, {"type": "queued-again"})
    await places.sender.send("plain-flushed", {"type": "queued"})
    await asyncio.sleep(0.2)  # let the second send land in the other node's queue
    await places.here.flush()
    await nothing_arrives(places.there, theirs)  # ... but not after a flush
    await nothing_arrives(places.sender, "plain-flushed", within=1.2)
    await places.sender.group_send("flushed", {"type": "after-flush"})
    await nothing_arrives(places.here, ours)
    await nothing_arrives(places.there, theirs)


# 4. Capacity across nodes --------------------------------------------------------------------

async def test_send_to_a_full_channel_elsewhere_drops_and_counts(places, redis_factory):
    here = DPSChannelLayer(**{**QUICK, "capacity": 2}, **({} if places.backend == "memory" else {
        "cluster": places.here.cluster, "node": "ws-a"}))
    try:
        channel = await here.new_channel()
        dropped_before = here.runtime.counters["dropped_channel_full"]
        if places.backend == "memory":
            # Every instance is this one node: the send is local and raises, as channels_redis.
            for i in range(2):
                await places.there.send(channel, {"type": "m", "i": i})
            with pytest.raises(ChannelFull):
                await places.there.send(channel, {"type": "m", "i": 2})
        else:
            # Another node: one-way, like every delivery between nodes; the receiving node
            # keeps `capacity` messages, drops the rest and counts each drop.
            for i in range(5):
                await places.there.send(channel, {"type": "m", "i": i})
            await await_until(lambda: here.runtime.counters["dropped_channel_full"]
                             - dropped_before == 3)
            assert_drops_are_published(here, dropped_before + 3)
        assert [(await receive(here, channel))["i"] for _ in range(2)] == [0, 1]
        await nothing_arrives(here, channel)
    finally:
        await here.close()


def assert_drops_are_published(layer: DPSChannelLayer, dropped: int) -> None:
    """The drop shows where an operator looks: the node's stats snapshot (the admin reads it
    from the node's Redis) and its /metrics."""
    from channel_layer import stats
    from topics.operator.node_report import NodeReporter
    from topics.operator.prometheus_export import WsNodeCollector

    reporter = NodeReporter(layer, layer.cluster.node(layer.node).redis_url)
    reporter.report_once()
    stored = stats.decode_snapshot(reporter._client.get(reporter.key))
    reporter._client.close()
    assert stored["counters"]["dropped_channel_full"] == dropped
    drops = next(m for m in WsNodeCollector(layer).collect() if m.name == "dps_dropped")
    assert {s.labels["reason"]: s.value for s in drops.samples
            if s.name == "dps_dropped_total"}["channel_full"] == dropped





# 5. Concurrent receivers ---------------------------------------------------------------------

async def test_two_concurrent_receives_on_one_channel_each_get_one_message(places):
    channel = await places.here.new_channel()
    first = asyncio.ensure_future(places.here.receive(channel))
    second = asyncio.ensure_future(places.here.receive(channel))
    await asyncio.sleep(0.05)  # both are waiting
    await places.there.send(channel, {"type": "m", "i": 1})
    await places.there.send(channel, {"type": "m", "i": 2})
    got = await asyncio.wait_for(asyncio.gather(first, second), WAIT)
    assert sorted(m["i"] for m in got) == [1, 2]
    plain_a = asyncio.ensure_future(places.sender.receive("shared-plain"))
    plain_b = asyncio.ensure_future(places.sender.receive("shared-plain"))
    await places.here.send("shared-plain", {"type": "m", "i": 3})
    await places.here.send("shared-plain", {"type": "m", "i": 4})
    got = await asyncio.wait_for(asyncio.gather(plain_a, plain_b), WAIT)
    assert sorted(m["i"] for m in got) == [3, 4]


# 6. Several layer instances of one node in one process ---------------------------------------

async def test_instances_of_one_node_share_it(places):
    kwargs = {} if places.backend == "memory" else {"cluster": places.here.cluster,
                                                    "node": "ws-a"}
    second = DPSChannelLayer(**QUICK, **kwargs)
    try:
        mine, its = await places.here.new_channel(), await second.new_channel()
        await places.here.send(its, {"type": "to-the-other-instance"})
        assert (await receive(second, its))["type"] == "to-the-other-instance"
        await places.here.group_add("first-instance", mine)
        await second.group_add("second-instance", its)
        # Heartbeats of both instances for a while: the owner must not take them for a
        # node restarting over and over (and drop the other instance's memberships).
        await asyncio.sleep(2.5)  # the duration under test: many heartbeats of both instances
        await places.there.group_send("first-instance", {"type": "a"})
        await places.there.group_send("second-instance", {"type": "b"})
        assert (await receive(places.here, mine))["type"] == "a"
        assert (await receive(second, its))["type"] == "b"
    finally:
        await second.close()
