"""A Phoenix client that publishes steadily and records every reply and push, as JSON.

    python -m tests.support.traffic_client URL --topics a,b --seconds 25 --interval 0.1

Joins each ``topics:NAME``, then publishes ``{"seq": n}`` (and ``"from": NAME`` with
``--name``) to each topic every ``interval``
seconds for ``seconds``, reading all the while; then waits ``--settle`` seconds for late
pushes. It prints ``{"joined": true}`` once joined, then one JSON object: ``publishes``
(topic, seq, sent, answered, status) and ``pushes`` (topic, seq, at), times from
``time.time()``. Runs anywhere a test cannot reach (a network
namespace), so it reports rather than asserts.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect


async def main(args: argparse.Namespace) -> None:
    topics = [f"topics:{name}" for name in args.topics.split(",")]
    publishes: dict[str, dict] = {}
    pushes: list[dict] = []
    joined: dict[str, asyncio.Future] = {}
    async with connect(args.url, ping_interval=None, open_timeout=30) as ws:
        async def read() -> None:
            async for raw in ws:
                join_ref, ref, topic, event, payload = json.loads(raw)
                if event == "phx_reply" and ref in joined:
                    joined[ref].set_result(payload)
                elif event == "phx_reply" and ref in publishes:
                    publishes[ref].update(answered=time.time(), status=payload["status"],
                                          response=payload.get("response"))
                elif ref is None and event == "event":
                    pushes.append({"topic": topic, "seq": payload["seq"], "at": time.time(),
                                   "from": payload.get("from")})

        reader = asyncio.ensure_future(read())
        for i, topic in enumerate(topics):
            ref = f"j{i}"
            joined[ref] = asyncio.get_running_loop().create_future()
            await ws.send(json.dumps([ref, ref, topic, "phx_join", {}]))
            reply = await asyncio.wait_for(joined[ref], 30)
            assert reply["status"] == "ok", reply
        print(json.dumps({"joined": True}), flush=True)
        if args.wait_go:  # several clients: publish once all of them have joined
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        seq = 0
        ends = time.monotonic() + args.seconds
        while time.monotonic() < ends:
            for i, topic in enumerate(topics):
                ref = f"p{seq}-{i}"
                publishes[ref] = {"topic": topic, "seq": seq, "sent": time.time(),
                                  "answered": None, "status": None, "from": args.name}
                payload = {"seq": seq} if args.name is None else {"seq": seq, "from": args.name}
                await ws.send(json.dumps([f"j{i}", ref, topic, "publish",
                                          ["event", payload]]))
            seq += 1
            await asyncio.sleep(args.interval)  # the traffic's pace
        await asyncio.sleep(args.settle)  # late replies and pushes still count
        reader.cancel()
    print(json.dumps({"publishes": list(publishes.values()), "pushes": pushes}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--topics", required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--settle", type=float, default=3)
    parser.add_argument("--wait-go", action="store_true",
                        help="once joined, wait for a line on stdin before publishing")
    parser.add_argument("--name", help="put in every payload as 'from' (several publishers)")
    asyncio.run(main(parser.parse_args()))
