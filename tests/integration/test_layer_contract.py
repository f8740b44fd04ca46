"""The Channels layer specification, on the embedded cluster and on real Redis servers."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull

from channel_layer import MessageTooLarge

WAIT = 3.0


async def receive(layer, channel, timeout=WAIT):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def nothing_arrives(layer, channel, within=0.3):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), within)


async def test_send_receive_process_channel(layer_factory):
    layer = layer_factory()
    channel = await layer.new_channel()
    assert channel.startswith("specific.") and "!" in channel
    await layer.send(channel, {"type": "test.message", "text": "hi"})
    assert await receive(layer, channel) == {"type": "test.message", "text": "hi"}


async def test_send_receive_plain_channel(layer_factory):
    layer = layer_factory()
    await layer.send("worker-queue", {"type": "task", "n": 1})
    await layer.send("worker-queue", {"type": "task", "n": 2})
    assert (await receive(layer, "worker-queue"))["n"] == 1
    assert (await receive(layer, "worker-queue"))["n"] == 2


async def test_receive_is_fifo_and_keeps_types(layer_factory):
    layer = layer_factory()
    channel = await layer.new_channel()
    for i in range(20):
        await layer.send(channel, {"type": "m", "i": i, "b": b"\x00\xff", "f": 1.5, "n": None})
    got = [await receive(layer, channel) for _ in range(20)]
    assert [m["i"] for m in got] == list(range(20))
    assert got[0]["b"] == b"\x00\xff" and got[0]["f"] == 1.5 and got[0]["n"] is None


async def test_sender_mutation_after_send_does_not_leak(layer_factory):
    layer = layer_factory()
    channel = await layer.new_channel()
    message = {"type": "m", "items": [1]}
    await layer.send(channel, message)
    message["items"].append(2)
    assert (await receive(layer, channel))["items"] == [1]


@pytest.mark.parametrize("name", [
    "has space", "trailing-newline\n", "ünïcode", "a" * 100, "", "colon:name", 5, None, b"bytes",
])
async def test_invalid_channel_names_are_refused(layer_factory, name):
    layer = layer_factory()
    with pytest.raises(TypeError):
        await layer.send(name, {"type": "m"})


@pytest.mark.parametrize("name", ["has space", "newline\n", "ünï", "g" * 100, "", "topics:x", 7])
async def test_invalid_group_names_are_refused(layer_factory, name):
    layer = layer_factory()
    channel = await layer.new_channel()
    with pytest.raises(TypeError):
        await layer.group_add(name, channel)
    with pytest.raises(TypeError):
        await layer.group_send(name, {"type": "m"})


async def test_longest_valid_names_work(layer_factory):
    layer = layer_factory()
    await layer.send("c" * 99, {"type": "m"})
    assert (await receive(layer, "c" * 99))["type"] == "m"
    channel = await layer.new_channel()
    await layer.group_add("g" * 99, channel)
    await layer.group_send("g" * 99, {"type": "m"})
    assert (await receive(layer, channel))["type"] == "m"


async def test_reserved_key_and_non_dict_are_refused(layer_factory):
    layer = layer_factory()
    channel = await layer.new_channel()
    with pytest.raises(ValueError):
        await layer.send(channel, {"type": "m", "__asgi_channel__": "x"})
    with pytest.raises(TypeError):
        await layer.send(channel, ["not", "a", "dict"])


async def test_capacity_raises_channel_full(layer_factory):
    layer = layer_factory(capacity=3)
    channel = await layer.new_channel()
    for i in range(3):
        await layer.send(channel, {"type": "m", "i": i})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "m", "i": 3})
    await layer.send("plain", {"type": "m"})
    await layer.send("plain", {"type": "m"})
    await layer.send("plain", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("plain", {"type": "m"})
    assert (await receive(layer, channel))["i"] == 0
    await layer.send(channel, {"type": "m", "i": 3})  # room again


async def test_per_channel_capacity(layer_factory):
    layer = layer_factory(capacity=100, channel_capacity={"small*": 1, "specific.*": 2})
    await layer.send("small-one", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("small-one", {"type": "m"})
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "m"})
    await layer.send(channel, {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "m"})
    for _ in range(5):
        await layer.send("big-one", {"type": "m"})


async def test_groups(layer_factory):
    layer = layer_factory()
    a, b, c = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("room", a)
    await layer.group_add("room", b)
    await layer.group_add("other", c)
    await layer.group_send("room", {"type": "hello"})
    assert (await receive(layer, a))["type"] == "hello"
    assert (await receive(layer, b))["type"] == "hello"
    await nothing_arrives(layer, c)
    await layer.group_discard("room", b)
    await layer.group_send("room", {"type": "second"})
    assert (await receive(layer, a))["type"] == "second"
    await nothing_arrives(layer, b)


async def test_group_add_is_idempotent_and_discard_of_unknown_is_harmless(layer_factory):
    layer = layer_factory()
    a = await layer.new_channel()
    await layer.group_add("room", a)
    await layer.group_add("room", a)
    await layer.group_discard("room", "specific.nobody!x")
    await layer.group_discard("nogroup", a)
    await layer.group_send("room", {"type": "once"})
    assert (await receive(layer, a))["type"] == "once"
    await nothing_arrives(layer, a)


async def test_group_send_to_empty_group_is_fine(layer_factory):
    layer = layer_factory()
    await layer.group_send("nobody-here", {"type": "m"})


async def test_group_send_never_raises_channel_full(layer_factory):
    layer = layer_factory(capacity=2)
    full, fine = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", full)
    await layer.group_add("room", fine)
    for i in range(5):
        await layer.group_send("room", {"type": "m", "i": i})
    assert [(await receive(layer, fine))["i"] for _ in range(2)] == [0, 1]
    assert [(await receive(layer, full))["i"] for _ in range(2)] == [0, 1]


async def test_group_send_preserves_order(layer_factory):
    layer = layer_factory()
    a = await layer.new_channel()
    await layer.group_add("ordered", a)
    for i in range(50):
        await layer.group_send("ordered", {"type": "m", "i": i})
    assert [(await receive(layer, a))["i"] for _ in range(50)] == list(range(50))


async def test_message_expiry_is_checked_at_receive(layer_factory):
    layer = layer_factory(expiry=1)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "old"})
    await layer.send("plain-expiring", {"type": "old"})
    await asyncio.sleep(1.2)  # the duration under test: past expiry=1 (the layer reads time.time)
    await layer.send(channel, {"type": "new"})
    assert (await receive(layer, channel))["type"] == "new"
    await nothing_arrives(layer, "plain-expiring", within=1.2)


async def test_group_expiry_removes_old_memberships(layer_factory):
    layer = layer_factory(group_expiry=1, heartbeat_interval=0.2)
    channel = await layer.new_channel()
    await layer.group_add("fleeting", channel)
    await asyncio.sleep(1.8)  # the duration under test: past group_expiry=1 (real clock)
    await layer.group_send("fleeting", {"type": "late"})
    await nothing_arrives(layer, channel, within=0.5)


async def test_large_message_and_limit(layer_factory):
    layer = layer_factory(max_message_bytes=2 * 1024 * 1024)
    channel = await layer.new_channel()
    blob = "x" * (1024 * 1024)
    await layer.group_add("big", channel)
    await layer.send(channel, {"type": "m", "blob": blob})
    assert (await receive(layer, channel))["blob"] == blob
    await layer.group_send("big", {"type": "m", "blob": blob})
    assert (await receive(layer, channel))["blob"] == blob
    with pytest.raises(MessageTooLarge):
        await layer.send(channel, {"type": "m", "blob": "y" * (3 * 1024 * 1024)})
    with pytest.raises(MessageTooLarge):
        await layer.group_send("big", {"type": "m", "blob": "y" * (3 * 1024 * 1024)})


async def test_flush_empties_channels_and_groups(layer_factory):
    layer = layer_factory()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.send(channel, {"type": "m"})
    await layer.send("plain-flushed", {"type": "m"})
    await layer.flush()
    await nothing_arrives(layer, channel)
    await nothing_arrives(layer, "plain-flushed", within=1.2)
    await layer.group_send("room", {"type": "after-flush"})
    await nothing_arrives(layer, channel)


async def test_close_then_reuse(layer_factory):
    layer = layer_factory()
    channel = await layer.new_channel()
    await layer.close()
    await layer.close()  # twice is fine
    await layer.send(channel, {"type": "again"})
    assert (await receive(layer, channel))["type"] == "again"


async def test_cancelled_receive_loses_nothing(layer_factory):
    layer = layer_factory()
    channel = await layer.new_channel()
    for _ in range(5):
        task = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.01)  # gets the receive in flight; nothing is lost whenever it is cancelled
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    plain = asyncio.ensure_future(layer.receive("plain-cancel"))
    await asyncio.sleep(0.05)  # as above: a receive in flight, cancelled at any point
    plain.cancel()
    await layer.send(channel, {"type": "kept"})
    await layer.send("plain-cancel", {"type": "kept-plain"})
    assert (await receive(layer, channel))["type"] == "kept"
    assert (await receive(layer, "plain-cancel"))["type"] == "kept-plain"


async def test_plain_channels_received_on_leave_no_buffers_behind(layer_factory):
    """A plain channel's buffer holds what was popped and not yet returned, and goes when it
    empties: many distinct channels, each read once, leave the runtime's buffers empty."""
    layer = layer_factory()
    for i in range(200):
        await layer.send(f"plain-once-{i}", {"type": "once", "i": i})
        assert (await receive(layer, f"plain-once-{i}"))["i"] == i
    assert layer.runtime.plain.buffers == {}
    # What a cancelled receive() had popped waits for the next one, then its buffer goes too.
    plain = asyncio.ensure_future(layer.receive("plain-cancelled"))
    await asyncio.sleep(0.05)  # a receive in flight (it may have popped), cancelled at any point
    plain.cancel()
    await layer.send("plain-cancelled", {"type": "kept"})
    assert (await receive(layer, "plain-cancelled"))["type"] == "kept"
    assert layer.runtime.plain.buffers == {}


def test_async_to_sync_from_sync_code(layer_factory):
    layer = layer_factory()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("sync-room", channel)
    async_to_sync(layer.send)(channel, {"type": "direct"})
    async_to_sync(layer.group_send)("sync-room", {"type": "grouped"})
    assert async_to_sync(layer.receive)(channel)["type"] == "direct"
    assert async_to_sync(layer.receive)(channel)["type"] == "grouped"
    async_to_sync(layer.send)("plain-sync", {"type": "plain"})
    assert async_to_sync(layer.receive)("plain-sync")["type"] == "plain"


def test_two_event_loops_in_two_threads(layer_factory):
    layer = layer_factory()
    channel = async_to_sync(layer.new_channel)()
    received: list = []
    errors: list = []

    def receiver() -> None:
        async def run():
            for _ in range(10):
                received.append((await receive(layer, channel))["i"])
        try:
            asyncio.run(run())
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=receiver)
    thread.start()
    time.sleep(0.1)  # the receiver's head start; the order it asserts holds without it

    async def send_all():
        for i in range(10):
            await layer.send(channel, {"type": "m", "i": i})
    asyncio.run(send_all())
    thread.join(10)
    assert not errors and received == list(range(10))


async def test_join_registered_before_group_add_returns(layer_factory):
    layer = layer_factory()
    for i in range(20):
        channel = await layer.new_channel()
        await layer.group_add(f"fresh{i}", channel)
        await layer.group_send(f"fresh{i}", {"type": "first"})
        assert (await receive(layer, channel))["type"] == "first"


async def test_client_process_without_node_can_send_but_not_receive(redis_factory):
    from channel_layer.layer import DPSChannelLayer
    from channel_layer.runtime import NotAReceivingNode
    from tests.support.inproc import TopicServerThread, cluster_of

    cluster = cluster_of({"ws-a": redis_factory().url, "ts-a": redis_factory().url})
    with TopicServerThread(cluster):
        node = DPSChannelLayer(cluster=cluster, node="ws-a")
        client = DPSChannelLayer(cluster=cluster)
        try:
            channel = await node.new_channel()
            await node.group_add("room", channel)
            await client.group_send("room", {"type": "from-client"})
            await client.send(channel, {"type": "direct-from-client"})
            got = {(await receive(node, channel))["type"] for _ in range(2)}
            assert got == {"from-client", "direct-from-client"}
            with pytest.raises(NotAReceivingNode):
                await client.new_channel()
        finally:
            await node.close()
            await client.close()


async def test_fastlane_takes_group_messages_on_the_callers_loop(layer_factory):
    layer = layer_factory()
    fast, slow = await layer.new_channel(), await layer.new_channel()
    loop = asyncio.get_running_loop()
    got: list = []
    arrived = asyncio.Event()

    def deliver(message):
        assert asyncio.get_running_loop() is loop  # called on the registering loop
        got.append(message["i"])
        if len(got) == 20:
            arrived.set()

    layer.add_fastlane(fast, deliver)
    await layer.group_add("lanes", fast)
    await layer.group_add("lanes", slow)
    for i in range(20):
        await layer.group_send("lanes", {"type": "m", "i": i})
    await asyncio.wait_for(arrived.wait(), WAIT)
    assert got == list(range(20))
    assert [(await receive(layer, slow))["i"] for _ in range(20)] == list(range(20))
    await layer.send(fast, {"type": "direct"})  # point-to-point still queues
    assert (await receive(layer, fast))["type"] == "direct"
    await nothing_arrives(layer, fast)
    layer.remove_fastlane(fast)
    await layer.group_send("lanes", {"type": "m", "i": 20})
    assert (await receive(layer, fast))["i"] == 20 and len(got) == 20


def test_dps_layer_setting_overrides_config(settings):
    from channel_layer.layer import DPSChannelLayer

    settings.DPS_LAYER = {"capacity": 7, "expiry": 5}
    layer = DPSChannelLayer(capacity=100)
    assert layer.get_capacity("specific.local!x") == 7 and layer.settings.expiry == 5
