"""Issue 20 item 4: a token of a user later deactivated with a changed password; disconnect(user)
(and disconnect(user, revoke=True) where it exists) then a reconnect with the same token; a
token signed with a rotated-out key on a node with it in DJANGO_SECRET_KEY_FALLBACKS."""
import asyncio
import secrets
import subprocess

from _probe import PY, ROOT, Cluster, emit, free_base_port, run, ws_status


async def closed_after(url: str, cluster: Cluster, call: str) -> tuple[bool, int]:
    from websockets.asyncio.client import connect

    ws = await connect(url, open_timeout=10)
    await asyncio.to_thread(cluster.shell, call)
    try:
        await asyncio.wait_for(ws.wait_closed(), 5)
        closed = True
    except TimeoutError:
        closed = False
        await ws.close()
    return closed, await ws_status(url)


def rotation(database: str) -> object:
    old_key, new_key = secrets.token_urlsafe(50), secrets.token_urlsafe(50)
    base = {"PATH": "/usr/bin:/bin", "DJANGO_DEBUG": "1", "DPS_DATABASE": database,
            "DJANGO_SETTINGS_MODULE": "dps_site.settings", "DPS_ALLOW_ANONYMOUS": "0"}
    done = subprocess.run([PY, "manage.py", "dps_token", "keeper"], cwd=ROOT, capture_output=True,
                          text=True, env={**base, "DJANGO_SECRET_KEY": old_key})
    token = done.stdout.strip().split()[-1]
    port = free_base_port(1)
    node = subprocess.Popen([PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                             "dps_site.asgi:application"], cwd=ROOT,
                            env={**base, "DJANGO_SECRET_KEY": new_key,
                                 "DJANGO_SECRET_KEY_FALLBACKS": old_key},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from websockets.sync.client import connect
        for _ in range(100):
            try:
                connect(f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0", open_timeout=2).close()
            except Exception as exc:  # noqa: BLE001 - waiting for the port
                if "403" in str(exc) or "HTTP" in str(exc):
                    break
                import time
                time.sleep(0.2)
        return run(ws_status(f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0&token={token}"))
    finally:
        node.terminate()
        node.wait(10)


with Cluster(env={"DPS_ALLOW_ANONYMOUS": "0"}, ws=1, ts=1) as cluster:
    figures = {}
    cluster.make_user("leaver")
    url = cluster.ws_urls[0] + "?vsn=2.0.0&token=" + cluster.token("leaver")
    figures["before"] = run(ws_status(url))
    cluster.shell("from django.contrib.auth import get_user_model as g; u=g().objects.get("
                  "username='leaver'); u.is_active=False; u.set_password('changed-9'); u.save()")
    figures["deactivated_password_changed"] = run(ws_status(url))
    cluster.make_user("kicked")
    url = cluster.ws_urls[0] + "?vsn=2.0.0&token=" + cluster.token("kicked")
    user = "__import__('django.contrib.auth', fromlist=['x']).get_user_model().objects.get(username='kicked')"
    figures["disconnect:closed,reconnect"] = run(closed_after(
        url, cluster, f"from topics.api import disconnect; disconnect({user})"))
    try:
        figures["disconnect_revoke:closed,reconnect"] = run(closed_after(
            url, cluster, f"from topics.api import disconnect; disconnect({user}, revoke=True)"))
    except RuntimeError as exc:
        figures["disconnect_revoke:closed,reconnect"] = str(exc).strip().splitlines()[-1]
    cluster.make_user("keeper")
    figures["rotated_key_in_fallbacks"] = rotation(cluster.env["DPS_DATABASE"])
emit(figures)
