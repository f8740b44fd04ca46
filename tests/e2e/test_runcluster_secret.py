"""``manage.py runcluster``'s own secret and files: a token forged with the repository's public
development key opens no socket; ``dps_token`` and ``dps_publish`` run beside the cluster, with
no extra environment, sign with its key and reach its members; everything it writes is 0600."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from django.core import signing

from dps_site.settings import DEVELOPMENT_SECRET_KEY
from tests.support.command_process import OutputLines, stop_gracefully
from tests.support.phoenix_client import PhoenixClient, socket_url
from topics.devtools.cluster_plan import REPOSITORY_DIR
from topics.hooks.auth import TOKEN_SALT
from topics.management.commands.runcluster import READY_LINE

pytestmark = pytest.mark.e2e
TEN_YEARS = 10 * 365 * 24 * 3600


def forged_token(user_id: str) -> str:
    """What anyone with a clone can make: the repository's key, the admin, a 10-year expiry."""
    return signing.dumps({"u": user_id, "exp": time.time() + TEN_YEARS},
                         key=DEVELOPMENT_SECRET_KEY, salt=TOKEN_SALT)


async def handshake_status(url: str) -> int:
    try:
        async with websockets.connect(url, open_timeout=10):
            return 101
    except websockets.exceptions.InvalidStatus as refusal:
        return refusal.response.status_code


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The one environment of the developer's shell: runcluster and the commands beside it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DPS_"))}
    return {**env, "DPS_ALLOW_ANONYMOUS": "0", "DPS_DATABASE": str(tmp_path / "db.sqlite3"),
            "XDG_STATE_HOME": str(tmp_path / "state")}


@pytest.fixture
def cluster(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], OutputLines, int]]:
    from topics.devtools.embedded_redis import free_port_block

    port = free_port_block(1)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runcluster", "--ws", "1", "--ts", "1", "--port", str(port)],
        cwd=REPOSITORY_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    lines = OutputLines(proc)
    try:
        lines.wait_for(READY_LINE, 120)
        yield proc, lines, port
    finally:
        stop_gracefully(proc, signal.SIGINT, 30)


def beside(env: dict[str, str], *argv: str) -> str:
    """A management command run next to the cluster, in the same shell."""
    result = subprocess.run([sys.executable, "manage.py", *argv], cwd=REPOSITORY_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_token_forged_with_the_development_key_is_refused_and_dps_token_beside_works(
        cluster, env):
    _, lines, port = cluster
    url = socket_url(port)
    assert asyncio.run(handshake_status(f"{url}&token={forged_token('1')}")) == 403
    assert asyncio.run(handshake_status(url)) == 403  # anonymous: refused as asked
    token = beside(env, "dps_token", "admin")
    assert asyncio.run(handshake_status(f"{url}&token={token}")) == 101, "\n".join(lines.drain())


def test_dps_publish_beside_the_cluster_reaches_its_members(cluster, env):
    _, _, port = cluster
    token = beside(env, "dps_token", "admin")

    async def publish_and_receive() -> dict:
        async with await PhoenixClient.connect(f"{socket_url(port)}&token={token}") as member:
            await member.join_ok("topics:beside")
            await asyncio.to_thread(beside, env, "dps_publish", "topics:beside", "news",
                                    json.dumps({"n": 7}))
            [push] = await member.pushes("topics:beside", 1)
            return push.payload

    assert asyncio.run(publish_and_receive()) == {"n": 7}


def test_everything_runcluster_writes_is_for_its_user_only(cluster, env, tmp_path: Path):
    proc, lines, _ = cluster
    output = "\n".join(lines.drain())
    cluster_file = Path(re.search(r"cluster file: (\S+)", output)[1])
    password_file = re.search(r"password in (\S+) \(0600\)", output)[1]
    [running] = (tmp_path / "state" / "dps").glob("*/running.json")
    record = json.loads(running.read_text())
    assert record["cluster_file"] == str(cluster_file) and record["pid"] == proc.pid
    secret = Path(record["secret_file"])
    assert mode(cluster_file.parent) == 0o700
    for path in (cluster_file, secret, running, password_file, env["DPS_DATABASE"]):
        assert mode(path) == 0o600, path
    assert secret.read_text().strip() not in output
    assert DEVELOPMENT_SECRET_KEY != secret.read_text().strip()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert not running.exists() and not cluster_file.parent.exists()
    assert Path(password_file).exists()  # the account outlives the cluster, so does its password
