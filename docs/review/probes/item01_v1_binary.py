"""Issue 20 item 1: a V2 member pushes binary frames to a topic whose members are a V1 member
on the same node and on the other node, a V2 member on the other node and a long-poll member on
the same node; counts what each gets (and in which form) and the error lines in the nodes' logs,
under daphne and under uvicorn."""
import asyncio
import base64
import json
import struct
import sys

from _probe import Cluster, emit, http, run

PUSHES = 20
DATA = bytes(range(256))
B64 = base64.b64encode(DATA).decode()


def binary_push(join_ref: str, ref: str, topic: str, event: str, data: bytes) -> bytes:
    fields = [s.encode() for s in (join_ref, ref, topic, event)]
    return struct.pack("5B", 0, *map(len, fields)) + b"".join(fields) + data


async def member(url: str, topic: str, vsn: str, received: dict, name: str, ready: asyncio.Event,
                 done: asyncio.Event):
    from websockets.asyncio.client import connect

    async with connect(f"{url}?vsn={vsn}", open_timeout=10, max_size=None) as ws:
        join = ({"topic": topic, "event": "phx_join", "payload": {}, "ref": "1", "join_ref": "1"}
                if vsn.startswith("1") else ["1", "1", topic, "phx_join", {}])
        await ws.send(json.dumps(join))
        await ws.recv()
        ready.set()
        try:
            async with asyncio.timeout(20):
                while True:
                    raw = await ws.recv()
                    if isinstance(raw, bytes):
                        if raw[0] == 2 and b"blob" in raw[:40]:
                            received[name]["binary"] += raw.endswith(DATA)
                        continue
                    frame = json.loads(raw)
                    event, payload = ((frame["event"], frame["payload"]) if isinstance(frame, dict)
                                      else (frame[3], frame[4]))
                    if event == "blob":
                        received[name]["base64" if payload == {"binary": B64} else "other"] += 1
                    elif event == "end":
                        break
        except TimeoutError:
            received[name]["timed_out"] = True
        done.set()


def longpoll_member(base: str, topic: str, received: dict, stop_after: float) -> None:
    status, body, _ = http("GET", f"{base}/socket/longpoll?vsn=2.0.0")
    token = json.loads(body)["token"]
    http("POST", f"{base}/socket/longpoll?vsn=2.0.0&token={token}",
         json.dumps(["1", "1", topic, "phx_join", {}]).encode(),
         {"Content-Type": "application/x-ndjson"})
    received["ready"] = True
    import time
    deadline = time.monotonic() + stop_after
    while time.monotonic() < deadline:
        status, body, _ = http("GET", f"{base}/socket/longpoll?vsn=2.0.0&token={token}")
        answer = json.loads(body)
        for message in answer.get("messages", []):
            frame = json.loads(message) if isinstance(message, str) else message
            if frame[3] == "blob":
                received["base64" if frame[4] == {"binary": B64} else "other"] += 1
            elif frame[3] == "end":
                return
        if answer.get("status") not in (200, 204):
            received["status_" + str(answer.get("status"))] = True
            return


async def scenario(cluster: Cluster) -> dict:
    from websockets.asyncio.client import connect

    topic = "topics:binprobe"
    a, b = cluster.ws_urls
    members = {"v1_same_node": (a, "1.0.0"), "v1_other_node": (b, "1.0.0"),
               "v2_other_node": (b, "2.0.0")}
    received = {name: {"binary": 0, "base64": 0, "other": 0} for name in members}
    lp = {"base64": 0, "other": 0}
    events = [(asyncio.Event(), asyncio.Event()) for _ in members]
    tasks = [asyncio.create_task(member(url, topic, vsn, received, name, *ev))
             for (name, (url, vsn)), ev in zip(members.items(), events, strict=True)]
    lp_task = asyncio.create_task(asyncio.to_thread(longpoll_member, cluster.http[0], topic, lp, 25))
    for ready, _ in events:
        await ready.wait()
    while not lp.get("ready"):
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # joins on the other node reach the owner
    replies = {"ok": 0, "other": 0}
    async with connect(f"{a}?vsn=2.0.0", open_timeout=10, max_size=None) as pub:
        await pub.send(json.dumps(["1", "1", topic, "phx_join", {}]))
        await pub.recv()
        for ref in range(PUSHES):
            await pub.send(binary_push("1", f"b{ref}", topic, "blob", DATA))
        await pub.send(json.dumps(["1", "end", topic, "publish", ["end", {}]]))
        async with asyncio.timeout(20):
            while sum(replies.values()) < PUSHES:
                raw = await pub.recv()
                if isinstance(raw, bytes) and raw[0] == 1:
                    replies["ok" if b"ok" in raw[:60] else "other"] += 1
                elif isinstance(raw, str) and '"phx_reply"' in raw and '"b' in raw:
                    replies["ok" if '"ok"' in raw else "other"] += 1
    await asyncio.gather(*tasks, lp_task)
    log = cluster.log()
    return {"pushes": PUSHES, "publisher_replies": replies, **received, "longpoll_same_node": lp,
            "log_fastlane_failed": log.count("fastlane delivery failed"),
            "log_TypeError": log.count("TypeError"), "log_Traceback": log.count("Traceback")}


servers = sys.argv[1:] or ["daphne", "uvicorn"]
figures = {}
for server in servers:
    with Cluster(server=server) as cluster:
        figures[server] = run(scenario(cluster))
emit(figures)
