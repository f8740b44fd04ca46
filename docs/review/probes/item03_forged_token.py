"""Issue 20 item 3: a token forged offline with the repository's development key, against
runcluster with DPS_ALLOW_ANONYMOUS=0; a token from dps_token beside the cluster; a daphne node
with the development key on 0.0.0.0 under DEBUG."""
import subprocess
import time

import django
from _probe import PY, ROOT, Cluster, emit, free_base_port, run, ws_status
from django.conf import settings

DEV_KEY = "dps-development-only-not-secret"
settings.configure(SECRET_KEY=DEV_KEY)
django.setup()
from django.core import signing  # noqa: E402


def forged(user: str, **extra) -> str:
    claims = {"u": user, "exp": time.time() + 10 * 365 * 86400, **extra}
    return signing.dumps(claims, salt="dps.socket-token", key=DEV_KEY)


def dev_key_on_network_bind() -> str:
    port = free_base_port(1)
    env = {"DJANGO_DEBUG": "1", "DJANGO_SETTINGS_MODULE": "dps_site.settings", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([PY, "-m", "daphne", "-b", "0.0.0.0", "-p", str(port),
                             "dps_site.asgi:application"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        proc.wait(25)
        return f"exited {proc.returncode}"
    except subprocess.TimeoutExpired:
        proc.terminate()
        out = proc.communicate(10)[0]
        return "listening" if "Listening" in out else "running"


with Cluster(env={"DPS_ALLOW_ANONYMOUS": "0"}) as cluster:
    cluster.make_user("probe")
    url = cluster.ws_urls[0] + "?vsn=2.0.0&token="
    figures = {
        "forged_admin_user1_10y": run(ws_status(url + forged("1"))),
        "forged_missing_user999999": run(ws_status(url + forged("999999"))),
        "forged_user1_new_claims": run(ws_status(url + forged("1", v=0, h="0" * 32))),
        "no_token": run(ws_status(cluster.ws_urls[0] + "?vsn=2.0.0")),
    }
    plain = {k: v for k, v in cluster.env.items()}  # the same environment, no DPS_CLUSTER
    done = subprocess.run([PY, "manage.py", "dps_token", "probe"], cwd=ROOT, env=plain,
                          capture_output=True, text=True)
    token = done.stdout.strip().split()[-1] if done.returncode == 0 else ""
    figures["dps_token_beside_cluster"] = run(ws_status(url + token)) if token else \
        "dps_token failed: " + done.stderr.strip().splitlines()[-1]
figures["daphne_0.0.0.0_dev_key_debug_on"] = dev_key_on_network_bind()
emit(figures)
