"""``manage.py runcluster`` in a Django project that is not this repository's site: a
throwaway ``mysite`` in a temp dir, with its own settings (a hard-coded ``django-insecure-`` key,
anonymous sockets off) and its own ``asgi.py``, and ``topics`` on its path. The nodes run that
project's settings and ASGI app in its directory; its public key signs nothing the cluster
accepts; ``dps_token`` and ``dps_publish`` work beside it and a publish reaches both WS nodes."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core import signing

from tests.support.command_process import OutputLines, stop_gracefully
from tests.support.phoenix_client import PhoenixClient, socket_url
from topics.devtools.cluster_plan import REPOSITORY_DIR
from topics.devtools.embedded_redis import free_port_block
from topics.hooks.auth import TOKEN_SALT
from topics.management.commands.runcluster import READY_LINE

pytestmark = pytest.mark.e2e
PUBLIC_KEY = "django-insecure-this-key-is-in-mysite-s-repository"

SETTINGS = f'''
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = {PUBLIC_KEY!r}
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["daphne", "django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions", "channels", "topics"]
MIDDLEWARE = []
ROOT_URLCONF = "mysite.urls"
ASGI_APPLICATION = "mysite.asgi.application"
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3",
                           "NAME": BASE_DIR / "db.sqlite3"}}}}
CHANNEL_LAYERS = {{"default": {{"BACKEND": "channel_layer.DPSChannelLayer"}}}}
USE_TZ = True
DPS_ALLOW_ANONYMOUS = False
'''
ASGI = '''
import os
from django.core.asgi import get_asgi_application
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_asgi_app = get_asgi_application()
from topics.asgi import application_for
application = application_for(django_asgi_app)
'''
MANAGE = '''
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
'''


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    site = tmp_path / "mysite"
    (site / "mysite").mkdir(parents=True)
    (site / "mysite" / "__init__.py").write_text("")
    (site / "mysite" / "settings.py").write_text(SETTINGS)
    (site / "mysite" / "urls.py").write_text("urlpatterns = []\n")
    (site / "mysite" / "asgi.py").write_text(ASGI)
    (site / "manage.py").write_text(MANAGE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DPS_"))}
    # topics "installed": on the path, as pip would put it (never this repository as the cwd)
    env.update(PYTHONPATH=str(REPOSITORY_DIR), XDG_STATE_HOME=str(tmp_path / "state"))
    return site, env


def beside(site: Path, env: dict[str, str], *argv: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *argv], cwd=site, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def refused(url: str) -> bool:
    import websockets

    try:
        async with websockets.connect(url, open_timeout=10):
            return False
    except websockets.exceptions.InvalidStatus as refusal:
        return refusal.response.status_code == 403


async def publish_reaches_both_nodes(site: Path, env: dict[str, str], port: int,
                                     token: str) -> list[dict]:
    async with await PhoenixClient.connect(f"{socket_url(port)}&token={token}") as a, \
            await PhoenixClient.connect(f"{socket_url(port + 1)}&token={token}") as b:
        await a.join_ok("topics:mysite")
        await b.join_ok("topics:mysite")
        await asyncio.to_thread(beside, site, env, "dps_publish", "topics:mysite", "hello",
                                json.dumps({"from": "mysite"}))
        return [(await client.pushes("topics:mysite", 1))[0].payload for client in (a, b)]


def test_runcluster_runs_the_invoking_project(project):
    site, env = project
    port = free_port_block(2)
    proc = subprocess.Popen([sys.executable, "manage.py", "runcluster", "--ts", "1",
                             "--port", str(port)], cwd=site, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = OutputLines(proc)
    try:
        lines.wait_for(READY_LINE, 120)
        output = "\n".join(lines.all)
        assert f"ws-b: ws://127.0.0.1:{port + 1}/socket/websocket" in output
        assert (site / "db.sqlite3").exists()  # migrate ran in the project, on its database
        ws_pid = int(lines.all[[i for i, line in enumerate(lines.all)
                                if "ws-a started (pid" in line][0]].split("pid ")[1][:-1])
        command = Path(f"/proc/{ws_pid}/cmdline").read_bytes().split(b"\0")
        assert b"mysite.asgi:application" in command
        assert Path(f"/proc/{ws_pid}/cwd").resolve() == site.resolve()

        forged = signing.dumps({"u": "1", "exp": time.time() + 3600}, key=PUBLIC_KEY,
                               salt=TOKEN_SALT)
        assert asyncio.run(refused(f"{socket_url(port)}&token={forged}"))
        token = beside(site, env, "dps_token", "admin")
        assert asyncio.run(publish_reaches_both_nodes(site, env, port, token)) == [
            {"from": "mysite"}] * 2
    finally:
        stop_gracefully(proc, signal.SIGINT, 30)
    assert proc.returncode == 0, "\n".join(lines.drain())
