"""What a production-style node refuses, as real daphne, uvicorn and topic-server processes: the
public development key on a network bind, tokens of missing, inactive or revoked users, a
session cookie from a foreign origin, anonymous scrapes of /metrics; the rotated-out key
still verifying through DJANGO_SECRET_KEY_FALLBACKS, the SQLite file made 0600, and the TLS
settings block of docs/security.md passing ``check --deploy``."""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from django.core import signing

from tests.support.processes import wait_listening, write_cluster_file
from topics.devtools.embedded_redis import free_port
from topics.hooks.auth import TOKEN_SALT

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OLD_KEY = secrets.token_urlsafe(50)
NEW_KEY = secrets.token_urlsafe(50)
START_TIMEOUT_S = 60


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A node's environment with no development defaults: DEBUG off, anonymous refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DPS_"))}
    return {**env, "DJANGO_SETTINGS_MODULE": "dps_site.settings", "PYTHONPATH": str(ROOT),
            "DJANGO_DEBUG": "0", "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DPS_DATABASE": str(tmp_path / "db.sqlite3"), "PYTHONUNBUFFERED": "1", **extra}


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"manage.py {args}: {result.stdout}{result.stderr}"
    return result.stdout


def shell(env: dict[str, str], code: str) -> dict:
    return json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])


def start_server(argv: list[str], env: dict[str, str], port: int,
                 log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return wait_listening(proc, port, log, " ".join(argv[1:3]), START_TIMEOUT_S)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def handshake_status(url: str, headers: dict[str, str] | None = None) -> int:
    async def attempt() -> int:
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=10):
                return 101
        except websockets.exceptions.InvalidStatus as refusal:
            return refusal.response.status_code

    return asyncio.run(attempt())


def http_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# --- the development key ---------------------------------------------------------------------


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_the_development_key_is_refused_on_a_network_bind_even_with_debug_on(tmp_path, server):
    env = production_env(tmp_path, DJANGO_DEBUG="1")  # no DJANGO_SECRET_KEY: the public one
    port = str(free_port())
    argv = {"daphne": ["daphne", "-b", "0.0.0.0", "-p", port],
            "uvicorn": ["uvicorn", "--host", "0.0.0.0", "--port", port]}[server]
    proc = subprocess.Popen([sys.executable, "-m", *argv, "dps_site.asgi:application"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        output, _ = proc.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0]
        pytest.fail(f"{server} on 0.0.0.0 served with the development key:\n{output}")
    assert proc.returncode != 0
    assert "refusing to serve on 0.0.0.0 with the development SECRET_KEY" in output
    assert "Set DJANGO_SECRET_KEY" in output


# --- one production-style node ---------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[dict]:
    """A daphne node (DEBUG off) whose key was rotated: tokens were issued under OLD_KEY, the
    node runs with NEW_KEY and OLD_KEY as a fallback."""
    tmp_path = tmp_path_factory.mktemp("node")
    old = production_env(tmp_path, DJANGO_SECRET_KEY=OLD_KEY)
    new = production_env(tmp_path, DJANGO_SECRET_KEY=NEW_KEY, DJANGO_SECRET_KEY_FALLBACKS=OLD_KEY)
    os.umask(0o022)
    manage(old, "migrate", "--noinput")
    tokens = shell(old, (
        "import json; from django.contrib.auth.models import User; "
        "from topics.api import issue_token; "
        "users = {n: User.objects.create_user(n, password='pw ' + n) "
        "for n in ('alice', 'bob', 'carol', 'dave')}; "
        "print(json.dumps({n: issue_token(u) for n, u in users.items()}))"))
    port = free_port()
    proc = start_server([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                         "dps_site.asgi:application"], new, port, tmp_path / "node.log")
    try:
        yield {"env": new, "old_env": old, "port": port, "tokens": tokens, "tmp": tmp_path,
               "url": f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0",
               "http": f"http://127.0.0.1:{port}"}
    finally:
        stop(proc)
    assert OLD_KEY not in (tmp_path / "node.log").read_text()


def test_the_sqlite_file_holding_sessions_and_password_hashes_is_0600(node):
    assert stat.S_IMODE((node["tmp"] / "db.sqlite3").stat().st_mode) == 0o600


def test_a_token_signed_with_the_rotated_out_key_connects_through_the_fallback(node):
    assert handshake_status(node["url"] + "&token=" + node["tokens"]["alice"]) == 101


def test_tokens_of_missing_inactive_changed_or_revoked_users_are_refused(node):
    forged = signing.dumps({"u": "999999", "exp": time.time() + 3600, "v": 0, "h": "0" * 32},
                           key=NEW_KEY, salt=TOKEN_SALT)
    assert handshake_status(node["url"] + "&token=" + forged) == 403
    tokens = node["tokens"]
    for name in ("bob", "carol", "dave"):
        assert handshake_status(node["url"] + "&token=" + tokens[name]) == 101
    shell(node["env"], (
        "import json; from django.contrib.auth.models import User; from topics.api import "
        "revoke_tokens; bob = User.objects.get(username='bob'); bob.is_active = False; "
        "bob.save(); carol = User.objects.get(username='carol'); carol.set_password('new'); "
        "carol.save(); revoke_tokens(User.objects.get(username='dave')); print('{}')"))
    for name in ("bob", "carol", "dave"):
        assert handshake_status(node["url"] + "&token=" + tokens[name]) == 403, name


def test_a_session_cookie_is_accepted_only_from_the_nodes_own_origin(node):
    session = shell(node["env"], (
        "import json; from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, "
        "SESSION_KEY; from django.contrib.auth.models import User; "
        "from django.contrib.sessions.backends.db import SessionStore; "
        "user = User.objects.get(username='alice'); s = SessionStore(); "
        "s[SESSION_KEY] = str(user.pk); "
        "s[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'; "
        "s[HASH_SESSION_KEY] = user.get_session_auth_hash(); s.create(); "
        "print(json.dumps({'key': s.session_key}))"))["key"]
    cookie = {"Cookie": f"sessionid={session}"}
    own = f"http://127.0.0.1:{node['port']}"
    assert handshake_status(node["url"], {**cookie, "Origin": own}) == 101
    assert handshake_status(node["url"], {**cookie}) == 101  # no Origin: not a browser
    for foreign in ("http://127.0.0.1:9999", f"https://127.0.0.1:{node['port']}",
                    "http://evil.localhost", "http://evil.example"):
        assert handshake_status(node["url"], {**cookie, "Origin": foreign}) == 403, foreign
    assert handshake_status(node["url"], {"Origin": own}) == 403  # no session: anonymous


def test_metrics_with_debug_off_are_closed_without_the_bearer_token(node):
    status, body = http_status(node["http"] + "/metrics")
    assert status == 403 and b"dps_connections" not in body


def test_a_topic_servers_metrics_with_debug_off_need_the_bearer_token(tmp_path, redis_factory):
    cluster = write_cluster_file(tmp_path, {"ws-a": redis_factory().url,
                                            "ts-a": redis_factory().url})
    token = secrets.token_urlsafe(24)
    for name, extra in (("closed", {}), ("token", {"DPS_METRICS_TOKEN": token})):
        port = free_port()
        env = production_env(tmp_path, DJANGO_SECRET_KEY=NEW_KEY, DPS_CLUSTER=str(cluster),
                             DPS_NODE="ts-a", **extra)
        proc = start_server([sys.executable, "manage.py", "topic_server", "--metrics-port",
                             str(port)], env, port, tmp_path / f"ts-{name}.log")
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            if name == "closed":
                status, body = http_status(url)
                assert status == 403 and b"DPS_METRICS_TOKEN" in body
            else:
                assert http_status(url)[0] == 401
                assert http_status(url, {"Authorization": "Bearer wrong"})[0] == 401
                status, body = http_status(url, {"Authorization": f"Bearer {token}"})
                assert status == 200 and b"dps_topics" in body
        finally:
            stop(proc)
        assert token not in (tmp_path / f"ts-{name}.log").read_text()


# --- docs/security.md's TLS settings -----------------------------------------------------------


def test_the_tls_settings_block_of_the_docs_passes_check_deploy(tmp_path):
    doc = (ROOT / "docs" / "security.md").read_text()
    blocks = re.findall(r"<!-- check-deploy -->\s*```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 1, "docs/security.md marks one block <!-- check-deploy -->"
    (tmp_path / "production_settings.py").write_text(blocks[0])
    env = production_env(tmp_path, DJANGO_SETTINGS_MODULE="production_settings",
                         PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}",
                         DJANGO_SECRET_KEY=NEW_KEY, DJANGO_ALLOWED_HOSTS="app.example.com",
                         DPS_METRICS_TOKEN=secrets.token_urlsafe(24))
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy",
                             "--fail-level", "WARNING"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
