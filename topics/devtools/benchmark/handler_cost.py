"""What a topic handler costs per publish, measured in one process.

Two figures per handler kind below, per publish:

- ``step``: the handler step alone, as the consumer runs it for each publish (for the seed's
  handler: the lookup that finds nothing to run; for the others ``run_handle_in``: decode the
  payload, call the method, on a thread for a sync one, encode what it broadcasts);
- ``socket``: one socket (the real ASGI app through Channels' ``WebsocketCommunicator``, on DPS's
  embedded layer) publishes ``count`` messages, pipelined, and waits for every reply and its own
  copy; process CPU per publish, the communicator's own cost included (the same for every kind).

Rounds are interleaved and the best is kept. Run with ``python manage.py benchmark_handlers``.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from channels.testing import WebsocketCommunicator
from django.conf import settings

from topics.hooks.handlers import BoundHandler, Broadcast, SocketContext, TopicHandler
from topics.hooks.identity import Identity


class AsyncTransform(TopicHandler):
    async def handle_in(self, socket, event: str, payload: dict[str, Any]) -> Broadcast:
        return Broadcast({**payload, "by": socket.identity.name})


class SyncTransform(TopicHandler):
    def handle_in(self, socket, event: str, payload: dict[str, Any]) -> Broadcast:
        return Broadcast({**payload, "by": socket.identity.name})  # off the loop, in a thread


KINDS = {
    "seed": ("topics:bench", "topics.hooks.handlers.SeedTopic"),
    "async": ("async:bench", AsyncTransform),
    "sync": ("sync:bench", SyncTransform),
}


@dataclass(frozen=True)
class Cost:
    kind: str
    step_us: float
    socket_cpu_us: float


async def _measure_step(cls: Any, count: int) -> float:
    """CPU µs of the consumer's handler step per publish (``time.process_time``)."""
    handlers = {} if cls == "topics.hooks.handlers.SeedTopic" else {"t": BoundHandler(cls())}
    context = SocketContext(Identity("1"), {}, {})
    payload_json = json.dumps({"seq": 1, "text": "a message of some forty bytes"})
    cpu = time.process_time()
    for _ in range(count):
        handler = handlers.get("t")
        if handler is not None and handler.handle_in is not None:
            await handler.run_handle_in(context, "m", payload_json)
    return (time.process_time() - cpu) / count * 1e6


async def _measure_socket(application: Any, topic: str, count: int) -> float:
    client = WebsocketCommunicator(application, "/socket/websocket?vsn=2.0.0")
    connected, _ = await client.connect()
    assert connected, "the benchmark socket was refused"
    await client.send_to(text_data=json.dumps(["1", "1", topic, "phx_join", {}]))
    await client.receive_from(timeout=10)
    frames = [json.dumps(["1", str(i), topic, "publish", ["m", {"seq": i}]]) for i in range(count)]
    cpu = time.process_time()
    for frame in frames:
        await client.send_to(text_data=frame)
    for _ in range(2 * count):  # every reply and every own copy
        await client.receive_from(timeout=30)
    cpu = time.process_time() - cpu
    await client.disconnect()
    return cpu / count * 1e6


def measure(count: int = 2000, rounds: int = 3) -> list[Cost]:
    """The best of ``rounds`` runs of ``count`` publishes for each handler kind."""
    from dps_site.asgi import application

    settings.DPS_ALLOW_ANONYMOUS = True
    settings.DPS_PUBLISH_RATE = 0
    settings.DPS_TOPICS = {pattern.split(":")[0] + ":*": cls for pattern, cls in KINDS.values()}
    step = {kind: [] for kind in KINDS}
    socket = {kind: [] for kind in KINDS}
    asyncio.run(_measure_socket(application, KINDS["seed"][0], min(count, 200)))  # warm up
    for _ in range(rounds):
        for kind, (topic, cls) in KINDS.items():
            step[kind].append(asyncio.run(_measure_step(cls, count)))
            socket[kind].append(asyncio.run(_measure_socket(application, topic, count)))
    return [Cost(kind, min(step[kind]), min(socket[kind])) for kind in KINDS]
