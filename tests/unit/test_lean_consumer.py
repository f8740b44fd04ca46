"""The lean receive loop (topics.transport.lean_consumer) on its own: Channels' contract kept
(dispatch by type, one message at a time, StopConsumer from either side, the listener's error
ends the consumer) without a task per client frame."""
from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import StopConsumer
from channels.layers import channel_layers

from topics.transport.lean_consumer import LeanAsyncConsumer


class Recorder(LeanAsyncConsumer):
    """Records what it handles; ``hold`` blocks a client message until released."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []
        self.running = 0
        self.overlapped = False
        self.release = asyncio.Event()

    async def _handle(self, origin: str, message: dict) -> None:
        self.running += 1
        self.overlapped |= self.running > 1
        try:
            if message.get("hold"):
                await self.release.wait()
            self.seen.append((origin, message["n"]))
        finally:
            self.running -= 1

    async def client_frame(self, message: dict) -> None:
        await self._handle("client", message)

    async def channel_note(self, message: dict) -> None:
        await self._handle("channel", message)

    async def client_stop(self, message: dict) -> None:
        raise StopConsumer()

    async def channel_stop(self, message: dict) -> None:
        raise StopConsumer()

    async def channel_crash(self, message: dict) -> None:
        raise KeyError("a bug in a channel handler")


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    yield
    channel_layers.backends.clear()


async def started(consumer: Recorder) -> tuple[asyncio.Queue, asyncio.Task]:
    inbox: asyncio.Queue = asyncio.Queue()
    task = asyncio.get_running_loop().create_task(consumer({"type": "test"}, inbox.get, None))
    while not hasattr(consumer, "channel_name"):
        await asyncio.sleep(0)  # a bounded poll: the consumer gets its channel on its first step
    return inbox, task


async def drained(inbox: asyncio.Queue) -> None:
    """Until the consumer has taken and handled every client message put so far."""
    while not inbox.empty():
        await asyncio.sleep(0)  # one loop turn, no clock
    for _ in range(3):  # a handled message takes a step or two after it is taken
        await asyncio.sleep(0)  # one loop turn, no clock


async def test_client_messages_are_handled_in_order_without_a_task_each():
    consumer = Recorder()
    inbox, task = await started(consumer)
    loop = asyncio.get_running_loop()
    made = []

    def counting_factory(loop, coro, **kwargs):
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting_factory)
    try:
        for n in range(50):
            inbox.put_nowait({"type": "client.frame", "n": str(n)})
        await drained(inbox)
    finally:
        loop.set_task_factory(None)
    assert consumer.seen == [("client", str(n)) for n in range(50)]
    assert made == []  # Channels' await_many_dispatch makes a task (and an asyncio.wait) per frame
    inbox.put_nowait({"type": "client.stop"})
    await task  # StopConsumer ends it quietly


async def test_channel_and_client_messages_take_turns():
    consumer = Recorder()
    inbox, task = await started(consumer)
    inbox.put_nowait({"type": "client.frame", "n": "held", "hold": True})
    await drained(inbox)
    await consumer.channel_layer.send(consumer.channel_name, {"type": "channel.note", "n": "c"})
    for _ in range(5):
        await asyncio.sleep(0)  # one loop turn, no clock
    assert consumer.seen == []  # the channel message waits for the client's to finish
    consumer.release.set()
    while len(consumer.seen) < 2:
        await asyncio.sleep(0)  # one loop turn, no clock
    assert consumer.seen == [("client", "held"), ("channel", "c")]
    assert not consumer.overlapped
    await consumer.channel_layer.send(consumer.channel_name, {"type": "channel.stop"})
    await task  # a channel handler's StopConsumer ends the consumer too


async def test_a_channel_handlers_error_ends_the_consumer_with_it():
    consumer = Recorder()
    _inbox, task = await started(consumer)
    await consumer.channel_layer.send(consumer.channel_name, {"type": "channel.crash"})
    with pytest.raises(KeyError, match="a bug in a channel handler"):
        await task


async def test_a_message_without_a_handler_is_an_error():
    consumer = Recorder()
    inbox, task = await started(consumer)
    inbox.put_nowait({"type": "client.unknown"})
    with pytest.raises(ValueError, match="no handler for message type 'client.unknown'"):
        await task
