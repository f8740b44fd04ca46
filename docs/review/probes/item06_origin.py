"""Issue 20 item 6: WebSocket handshakes carrying a logged-in session cookie (runcluster, DEBUG
on, DPS_ALLOW_ANONYMOUS=0) from other origins: another port, a *.localhost host, another
scheme; the node's own origin and no cookie as controls."""
from _probe import Cluster, admin_session_cookie, emit, run, ws_status

with Cluster(env={"DPS_ALLOW_ANONYMOUS": "0"}, ws=1, ts=1) as cluster:
    cluster.make_user("browser", "browser-pass-1")
    cookie = admin_session_cookie(cluster.http[0], "browser", "browser-pass-1")
    url = cluster.ws_urls[0] + "?vsn=2.0.0"
    own = f"http://127.0.0.1:{cluster.port}"
    figures = {}
    for origin in (own, "http://127.0.0.1:9999", "http://evil.localhost", "http://localhost:9999",
                   f"https://127.0.0.1:{cluster.port}", "http://evil.example"):
        figures[origin.replace(str(cluster.port), "PORT")] = run(
            ws_status(url, {"Origin": origin, "Cookie": f"sessionid={cookie}"}))
    figures["own_origin_no_cookie"] = run(ws_status(url, {"Origin": own}))
emit(figures)
