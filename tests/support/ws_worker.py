"""A WS-side layer in its own process, driven over stdin/stdout with JSON lines.

    DPS_CLUSTER=file DPS_NODE=ws-a python -m tests.support.ws_worker \
        --members 3 --groups g1,g2 --publish 50 --expect 100

It creates ``members`` channels, joins each to every group, prints ``{"event": "ready"}``,
waits for a ``go`` line, then publishes ``publish`` messages to each group while every member
receives; when each member has ``expect`` messages per group (or the timeout passes) it prints
``{"event": "done", "received": {channel: {group: [[publisher, seq], ...]}}}``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    groups = args.groups.split(",")
    channels = [await layer.new_channel() for _ in range(args.members)]
    for channel in channels:
        for group in groups:
            await layer.group_add(group, channel)
    emit({"event": "ready", "channels": channels})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    received: dict[str, dict[str, list]] = {c: {g: [] for g in groups} for c in channels}

    async def consume(channel: str) -> None:
        wanted = args.expect * len(groups)
        got = 0
        while got < wanted:
            message = await layer.receive(channel)
            received[channel][message["group"]].append([message["publisher"], message["seq"]])
            got += 1

    async def publish() -> None:
        node = os.environ["DPS_NODE"]
        for seq in range(args.publish):
            for group in groups:
                await layer.group_send(group, {"type": "test.message", "group": group,
                                               "publisher": node, "seq": seq})

    consumers = [asyncio.ensure_future(consume(c)) for c in channels]
    await publish()
    done, pending = await asyncio.wait(consumers, timeout=args.timeout)
    for task in pending:
        task.cancel()
    emit({"event": "done", "received": received, "complete": not pending})
    await layer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--groups", required=True)
    parser.add_argument("--publish", type=int, default=0)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dps_site.settings")
    import django

    django.setup()
    asyncio.run(main(parser.parse_args()))
