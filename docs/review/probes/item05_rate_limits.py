"""Issue 20 item 5: 1,500 back-to-back publishes from a signed-in user's socket, then at once
the same from a new socket of the same user (ok / limited replies each); the per-identity
connection cap: 100 sockets on node 1, then a 101st on node 1 and on node 2."""
import asyncio
import json

from _probe import Cluster, emit, run, ws_status

COUNT = 1500


async def burst(url: str) -> dict:
    from websockets.asyncio.client import connect

    counts = {"ok": 0, "limited": 0, "other": 0}
    async with connect(url, open_timeout=10, max_size=None) as ws:
        await ws.send(json.dumps(["1", "1", "topics:rate", "phx_join", {}]))
        while json.loads(await ws.recv())[3] != "phx_reply":
            pass
        for ref in range(2, COUNT + 2):
            await ws.send(json.dumps(["1", str(ref), "topics:rate", "publish", ["e", {"n": ref}]]))
        replies = 0
        async with asyncio.timeout(60):
            while replies < COUNT:
                frame = json.loads(await ws.recv())
                if frame[3] != "phx_reply" or frame[1] in (None, "1"):
                    continue
                replies += 1
                status, response = frame[4]["status"], frame[4].get("response", {})
                if status == "ok":
                    counts["ok"] += 1
                elif "limit" in json.dumps(response):
                    counts["limited"] += 1
                else:
                    counts["other"] += 1
    return counts


async def connection_cap(cluster: Cluster, token: str) -> dict:
    from websockets.asyncio.client import connect

    held = [await connect(f"{cluster.ws_urls[0]}?vsn=2.0.0&token={token}", open_timeout=10)
            for _ in range(100)]
    try:
        return {"101st_node1": await ws_status(f"{cluster.ws_urls[0]}?vsn=2.0.0&token={token}"),
                "101st_node2": await ws_status(f"{cluster.ws_urls[1]}?vsn=2.0.0&token={token}")}
    finally:
        for ws in held:
            await ws.close()


with Cluster() as cluster:
    cluster.make_user("rater")
    cluster.make_user("capped")
    token = cluster.token("rater")
    url = f"{cluster.ws_urls[0]}?vsn=2.0.0&token={token}"
    figures = {"first_socket": run(burst(url)), "new_socket_at_once": run(burst(url))}
    figures["anonymous_first"] = run(burst(f"{cluster.ws_urls[0]}?vsn=2.0.0"))
    figures["anonymous_new_socket"] = run(burst(f"{cluster.ws_urls[0]}?vsn=2.0.0"))
    figures.update(run(connection_cap(cluster, cluster.token("capped"))))
emit(figures)
