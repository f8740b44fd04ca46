"""``manage.py runcluster`` for an operator: the admin account it creates on first start, the
metrics ports it prints, and static files under daphne and uvicorn with DEBUG on and off."""
from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.admin_session import Browser
from topics.devtools.admin_account import ensure_admin_account
from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import PROJECT_DIR
from topics.management.commands.runcluster import READY_LINE

# Without a terminal (its own session) runcluster hands the password over in a 0600 file.
ACCOUNT = re.compile(r"user '(?P<user>[^']+)', password in (?P<file>\S+) \(0600\)")


def _run_until_ready(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "manage.py", "runcluster", *argv], cwd=PROJECT_DIR,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line.rstrip())
        if READY_LINE in line or time.monotonic() > deadline:
            break
    assert any(READY_LINE in line for line in lines), "\n".join(lines)
    return proc, lines


@pytest.mark.parametrize(("server", "debug"), [("daphne", "1"), ("uvicorn", "1"),
                                               ("uvicorn", "0")])
def test_runcluster_creates_an_admin_account_and_serves_the_styled_admin(tmp_path: Path,
                                                                        server: str, debug: str):
    port = free_port_block(1)
    env = {**os.environ, "DPS_DATABASE": str(tmp_path / "db.sqlite3"), "DJANGO_DEBUG": debug,
           "XDG_STATE_HOME": str(tmp_path / "state"),
           "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
           # With DEBUG off a node refuses the public development key.
           "DJANGO_SECRET_KEY": "runcluster-operator-test-" + os.urandom(16).hex()}
    # With DEBUG off /metrics answers only a scrape that carries the operator's bearer token.
    metrics_token = os.urandom(16).hex() if debug == "0" else ""
    env["DPS_METRICS_TOKEN"] = metrics_token
    for name in ("DPS_NODE", "DPS_CLUSTER"):
        env.pop(name, None)
    proc, lines = _run_until_ready(["--ws", "1", "--ts", "1", "--port", str(port),
                                    "--server", server], env)
    try:
        output = "\n".join(lines)
        account = ACCOUNT.search(output)
        assert account, output
        password_file = Path(account["file"])
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        assert len(password) >= 16
        assert password not in output  # never in the output, which is often a log file
        metrics = re.findall(r"metrics of (ts-a|ws-a): (http://\S+/metrics)", output)
        assert {name for name, _ in metrics} == {"ws-a", "ts-a"}
        for _, url in metrics:
            if metrics_token:
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(url, timeout=10)
                assert refused.value.code in (401, 403)
            scrape = urllib.request.Request(url, headers={"Authorization": f"Bearer {metrics_token}"}
                                            if metrics_token else {})
            with urllib.request.urlopen(scrape, timeout=10) as response:
                assert b"dps_publishes_total" in response.read()

        # The demo chat comes first among the URLs, and the node serves it and its phoenix.js.
        announced = [i for i, line in enumerate(lines) if line.startswith("[runcluster]")
                     and "://127.0.0.1:" in line and "redis" not in line]
        assert f"demo chat (presence, recovery): http://127.0.0.1:{port}/" in lines[announced[0]]
        session = Browser(f"http://127.0.0.1:{port}")
        status, demo = session.get("/")
        assert status == 200 and b"dps/vendor/phoenix-1.8.16.min.js" in demo
        status, script = session.get("/static/dps/vendor/phoenix-1.8.16.min.js")
        assert status == 200 and b"Presence" in script
        status, css = session.get("/static/admin/css/base.css")
        assert status == 200 and b"--header-bg" in css
        assert session.get("/static/dps/dps.css")[0] == 200
        session.login(account["user"], password)
        status, page = session.get("/admin/dps/cluster/")
        assert status == 200 and b"dps-ring-svg" in page
    finally:
        proc.send_signal(signal.SIGINT)
        remaining, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, remaining
    assert password not in remaining


@pytest.mark.django_db
def test_the_account_is_created_only_while_there_is_no_superuser(django_user_model):
    username, password = ensure_admin_account()
    assert django_user_model.objects.get(username=username).check_password(password)
    assert ensure_admin_account() is None
    assert ensure_admin_account() is None
