"""Issue 20 item 7, under daphne and uvicorn (runcluster, DPS_ALLOW_ANONYMOUS=0): whether the
signed token (WebSocket ?token=) and a long-poll session token appear in the node's log; a
cookieless client with Origin http://evil.example posting into and polling a logged-in user's
long-poll session; whether long-poll accepts the signed token as ?token=."""
import json
import sys

from _probe import Cluster, admin_session_cookie, emit, http, run, ws_status

TOPIC = "topics:lpprobe"
ND = {"Content-Type": "application/x-ndjson"}


async def publish_secret(url: str, token: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"{url}?vsn=2.0.0&token={token}", open_timeout=10) as ws:
        await ws.send(json.dumps(["1", "1", TOPIC, "phx_join", {}]))
        await ws.recv()
        await ws.send(json.dumps(["1", "2", TOPIC, "publish", ["secret", {"pin": 1234}]]))
        await ws.recv()


def scenario(cluster: Cluster) -> dict:
    base, lp = cluster.http[0], cluster.http[0] + "/socket/longpoll?vsn=2.0.0"
    own = {"Origin": base}
    cluster.make_user("victim", "victim-pass-1")
    signed = cluster.token("victim")
    figures = {"ws_with_signed_token": run(ws_status(f"{cluster.ws_urls[0]}?vsn=2.0.0&token={signed}"))}
    _, body, _ = http("GET", f"{lp}&token={signed}", headers=own)
    answer = json.loads(body)
    figures["longpoll_signed_token_param"] = {"status": answer.get("status"),
                                              "session_opened": bool(answer.get("token"))}
    cookie = {"Cookie": "sessionid=" + admin_session_cookie(base, "victim", "victim-pass-1"), **own}
    session = json.loads(http("GET", lp, headers=cookie)[1])["token"]
    http("POST", f"{lp}&token={session}", json.dumps(["1", "1", TOPIC, "phx_join", {}]).encode(),
         {**ND, **cookie})
    json.loads(http("GET", f"{lp}&token={session}", headers=cookie)[1])  # the join's reply
    run(publish_secret(cluster.ws_urls[0], signed))
    evil = {"Origin": "http://evil.example"}
    status, body, _ = http("POST", f"{lp}&token={session}",
                           json.dumps(["1", "9", TOPIC, "publish", ["forged", {}]]).encode(),
                           {**ND, **evil})
    figures["evil_cookieless_post"] = [status, json.loads(body).get("status")]
    status, body, _ = http("GET", f"{lp}&token={session}", headers=evil)
    answer = json.loads(body)
    figures["evil_cookieless_poll"] = [status, answer.get("status"),
                                       "secret" in json.dumps(answer.get("messages", []))]
    status, body, _ = http("GET", f"{lp}&token={session}", headers={})
    answer = json.loads(body)
    figures["no_origin_cookieless_poll"] = [status, answer.get("status"),
                                            "secret" in json.dumps(answer.get("messages", []))]
    log = cluster.log()
    figures["signed_token_in_log"] = log.count(signed)
    figures["session_token_in_log"] = log.count(session)
    figures["log_lines_naming_the_socket_paths"] = sum(
        1 for line in log.splitlines() if "/socket/longpoll" in line or "/socket/websocket" in line)
    return figures


servers = sys.argv[1:] or ["daphne", "uvicorn"]
figures = {}
for server in servers:
    with Cluster(server=server, ws=1, ts=1, env={"DPS_ALLOW_ANONYMOUS": "0"}) as cluster:
        figures[server] = scenario(cluster)
emit(figures)
