"""Stand-in WS nodes for ``node_scale``: ``python -m topics.devtools.benchmark.standin BACKEND ws-c,ws-d``.

Each named node is one layer instance of BACKEND (``dps``: a ``DPSChannelLayer`` for that node
of ``$DPS_CLUSTER``; ``redis`` / ``redis_pubsub``: a channels_redis layer on
``$DPS_BENCH_REDIS_URL``) that holds one channel in no group and waits on it, as an idle WS
node's layer does. Prints ``ready`` once all are up; runs until stdin closes or SIGTERM.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys


def make_layer(backend: str, node: str):
    if backend == "dps":
        from channel_layer.cluster import load_cluster
        from channel_layer.layer import DPSChannelLayer

        return DPSChannelLayer(cluster=load_cluster(), node=node)
    from topics.devtools.benchmark.baseline_settings import redis_hosts

    [url] = redis_hosts()
    if backend == "redis":
        from channels_redis.core import RedisChannelLayer

        return RedisChannelLayer(hosts=[url])
    if backend == "redis_pubsub":
        from channels_redis.pubsub import RedisPubSubChannelLayer

        return RedisPubSubChannelLayer(hosts=[url])
    raise SystemExit(f"no stand-ins for back end {backend!r}")


async def idle_receiver(layer, channel: str) -> None:
    while True:
        try:
            await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            await asyncio.sleep(0.5)


async def main(backend: str, nodes: list[str]) -> None:
    layers = [make_layer(backend, node) for node in nodes]
    tasks = []
    for layer in layers:
        channel = await layer.new_channel()
        tasks.append(asyncio.create_task(idle_receiver(layer, channel)))
    await asyncio.sleep(0.2)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for layer in layers:
        try:
            await asyncio.wait_for(layer.close() if hasattr(layer, "close") else asyncio.sleep(0), 3)
        except Exception:
            pass


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dps_site.settings")
    import django

    django.setup()
    asyncio.run(main(sys.argv[1], sys.argv[2].split(",")))
