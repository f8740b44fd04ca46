"""Secure by default: what a node does without development settings, and what the development
commands (runcluster, runserver) turn on and say."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from topics.devtools.embedded_redis import free_port, free_port_block
from topics.devtools.local_cluster import PROJECT_DIR, LocalCluster
from topics.management.commands.runcluster import Command

PROBE = ("import json, sys; sys.argv[1:] = sys.argv[1:] or ['serve']; "
         "from django.conf import settings as s; print(json.dumps({'debug': s.DEBUG, "
         "'hosts': s.ALLOWED_HOSTS, 'anonymous': s.DPS_ALLOW_ANONYMOUS}))")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DPS_"))}
    return {**env, "DJANGO_SETTINGS_MODULE": "dps_site.settings", **extra}


def node_settings(*argv: str, **env: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=PROJECT_DIR,
                            env=clean_env(**env), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_ws_node_with_debug_off_refuses_the_development_secret_key_and_says_why():
    proc = subprocess.run(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(free_port()),
         "dps_site.asgi:application"], cwd=PROJECT_DIR, env=clean_env(),
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "refusing to run with the development SECRET_KEY" in proc.stderr
    assert "set DJANGO_SECRET_KEY" in proc.stderr.replace("Set", "set")
    # Nor does it sign socket tokens with it; manage.py's other commands still run.
    token = subprocess.run([sys.executable, "manage.py", "dps_token", "nobody"], cwd=PROJECT_DIR,
                           env=clean_env(), capture_output=True, text=True, timeout=60)
    assert token.returncode != 0 and "development SECRET_KEY" in token.stderr


def test_debug_anonymous_and_allowed_hosts_are_off_unless_asked_for():
    assert node_settings(DJANGO_SECRET_KEY="k" * 50) == {
        "debug": False, "hosts": [], "anonymous": False}
    assert node_settings(DJANGO_SECRET_KEY="k" * 50, DJANGO_ALLOWED_HOSTS="a.example,b.example",
                         DPS_ALLOW_ANONYMOUS="1") == {
        "debug": False, "hosts": ["a.example", "b.example"], "anonymous": True}
    # runserver is a development command: DEBUG and anonymous sockets on, unless said otherwise.
    assert node_settings("runserver") == {"debug": True, "hosts": [], "anonymous": True}
    assert node_settings("runserver", DPS_ALLOW_ANONYMOUS="0")["anonymous"] is False


def test_runcluster_turns_anonymous_on_says_so_and_an_explicit_0_wins():
    lines: list[str] = []
    open_cluster = LocalCluster(1, 1, port=9000, emit=lines.append, base_env=clean_env(),
                                migrate=False)
    Command()._announce(open_cluster)
    assert open_cluster.plan.development_settings() == {"DJANGO_DEBUG": "1",
                                                        "DPS_ALLOW_ANONYMOUS": "1"}
    assert any("DPS_ALLOW_ANONYMOUS=1  (anonymous sockets are accepted" in line for line in lines)
    locked = LocalCluster(1, 1, port=9000, emit=lines.append,
                          base_env=clean_env(DPS_ALLOW_ANONYMOUS="0"))
    assert locked.plan.development_settings()["DPS_ALLOW_ANONYMOUS"] == "0"


@pytest.mark.e2e
def test_a_locked_down_local_cluster_refuses_anonymous_sockets(tmp_path: Path):
    port = free_port_block(1)
    env = clean_env(DPS_ALLOW_ANONYMOUS="0", DPS_DATABASE=str(tmp_path / "db.sqlite3"))
    log: list[str] = []
    with LocalCluster(1, 1, port=port, emit=log.append, base_env=env, migrate=False) as cluster:
        async def status() -> int:
            try:
                async with websockets.connect(cluster.ws_urls[0], open_timeout=10):
                    return 101
            except websockets.exceptions.InvalidStatus as refusal:
                return refusal.response.status_code

        assert asyncio.run(status()) == 403, "\n".join(log)
    assert not any("DPS_ALLOW_ANONYMOUS is on" in line for line in log)
