"""Issue 20 item 8: /metrics of a WS node and of a topic server with DEBUG off (runcluster with
DJANGO_DEBUG=0 and a real key): with no DPS_METRICS_TOKEN set, and with one set (no token, a
wrong one, the bearer)."""
import re
import secrets

from _probe import Cluster, emit, http

TOKEN = secrets.token_urlsafe(24)
base = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"}
figures = {}
for config, env in (("unset", base), ("token_set", {**base, "DPS_METRICS_TOKEN": TOKEN})):
    with Cluster(env=env, ws=1, ts=1) as cluster:
        ts_url = re.search(r"metrics of ts-a: (\S+)", cluster.log()).group(1)
        for name, url in (("ws", cluster.http[0] + "/metrics"), ("ts", ts_url)):
            cases = {"no_auth": {}}
            if config == "token_set":
                cases.update(wrong={"Authorization": "Bearer wrong"},
                             bearer={"Authorization": f"Bearer {TOKEN}"})
            for case, headers in cases.items():
                status, body, _ = http("GET", url, headers=headers)
                figures[f"{config}.{name}.{case}"] = [status, len(body)]
        if config == "token_set":
            figures["token_in_log"] = TOKEN in cluster.log()
emit(figures)
