"""A Django site that is not dps_site (tests/sample_site: its own settings, users, login, rooms,
a RoomTopic handler), with DPS installed by pip from this checkout as the README's "Use DPS in
your Django project" says, run production-style (DEBUG off, its own SECRET_KEY, anonymous
refused) as a real cluster: six redis-servers, two topic servers, three daphne WS nodes and a
uvicorn one.

phoenix.js under Node (tests/interop/sample_site.mjs) speaks to WS nodes 1 and 2; the Python side
logs users in through the site's login form, takes their tokens from /dps/token/, publishes from
a Django view, the HTTP API and ``dps_publish``, and disconnects a user, where the script asks.
HTTP statuses of refused handshakes are asserted with the ``websockets`` client; WS nodes 3
(daphne) and 4 (uvicorn) have low connection limits for theirs.
"""
from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from django.core import signing

from topics.devtools.embedded_redis import RedisProcess, accepts_connections, port_is_free
from topics.hooks.auth import TOKEN_SALT

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SITE_DIR = ROOT / "tests" / "sample_site"
NODE_SCRIPT = ROOT / "tests" / "interop" / "sample_site.mjs"
SECRET_KEY = secrets.token_urlsafe(40)
API_KEY = secrets.token_urlsafe(24)
PASSWORD = "correct horse battery staple"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
LIMITED_NODE = {"DPS_MAX_CONNECTIONS": 3, "DPS_MAX_CONNECTIONS_PER_IDENTITY": 2}
READY_TIMEOUT_S = 60
SCRIPT_TIMEOUT_S = 120


def install_dps(target: Path) -> Path:
    """``pip install`` a copy of the checkout (its package files only) into ``target``."""
    source = target / "src"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for package in ("channel_layer", "topics"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    site_packages = target / "site-packages"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", "--target", str(site_packages), str(source)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"channel_layer", "topics"} <= {p.name for p in site_packages.iterdir()}
    return site_packages


def port_block_below_ephemeral(count: int) -> int:
    """``count`` consecutive free ports below the kernel's ephemeral range: the nodes' own
    outgoing connections (to Redis, while the other nodes start) cannot take them first."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        first = random.randrange(10_000, low - count)
        if all(port_is_free(port) for port in range(first, first + count)):
            return first
    raise OSError(f"no {count} consecutive free ports below {low}")


class SampleCluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.redis: list[RedisProcess] = []
        self.ports: list[int] = []  # chosen once the Redis servers hold theirs

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def socket_url(self, node: int, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.ports[node]}/socket/websocket?vsn=2.0.0{query}"

    def env(self, node: str | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DPS_", "DJANGO_"))}
        env.update({
            # The installed packages and the site; not the checkout.
            "PYTHONPATH": f"{self.site_packages}{os.pathsep}{SITE_DIR}",
            "DJANGO_SETTINGS_MODULE": "sample_site.settings",
            "DJANGO_SECRET_KEY": SECRET_KEY, "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SAMPLE_DATABASE": str(self.workdir / "site.sqlite3"), "SAMPLE_API_KEY": API_KEY,
            "DPS_CLUSTER": str(self.workdir / "cluster.json"), "PYTHONUNBUFFERED": "1",
            # The site's pages are on every node's port: each node's origin is the site's.
            "DPS_ALLOWED_ORIGINS": ",".join(f"http://127.0.0.1:{port}" for port in self.ports),
            **extra})
        if node:
            env["DPS_NODE"] = node
        return env

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=SITE_DIR,
                                env=self.env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"manage.py {args}: {result.stdout}{result.stderr}"
        return result.stdout

    def start(self) -> None:
        self.site_packages = install_dps(self.workdir / "install")
        names = ["ws-a", "ws-b", "ws-c", "ws-d", "ts-a", "ts-b"]
        for _ in names:
            self.redis.append(RedisProcess(parent_dir=str(self.workdir)).start())
        cluster = {"nodes": [{"name": n, "role": n[:2], "redis": r.url}
                             for n, r in zip(names, self.redis, strict=True)]}
        (self.workdir / "cluster.json").write_text(json.dumps(cluster))
        first = port_block_below_ephemeral(4)
        self.ports = [first + i for i in range(4)]
        self.manage("migrate", "--noinput")
        self.manage("shell", "-c", (
            "from django.contrib.auth.models import User; from rooms.models import Room\n"
            f"users = {{n: User.objects.create_user(n, password={PASSWORD!r}) for n in {USERS!r}}}\n"
            "Room.objects.create(name='lobby').members.add(users['alice'], users['bob'])"))
        self.ids = json.loads(self.manage("shell", "-c", (
            "import json; from django.contrib.auth.models import User\n"
            "print(json.dumps({u.username: str(u.pk) for u in User.objects.all()}))"
        )).strip().splitlines()[-1])
        for ts in ("ts-a", "ts-b"):
            self._spawn(ts, [sys.executable, "manage.py", "topic_server"], self.env(ts))
        for index, ws in enumerate(("ws-a", "ws-b", "ws-c", "ws-d")):
            extra = {"DPS_LIMITS": json.dumps(LIMITED_NODE)} if ws in ("ws-c", "ws-d") else {}
            port = str(self.ports[index])
            server = (["uvicorn", "--host", "127.0.0.1", "--port", port] if ws == "ws-d"
                      else ["daphne", "-b", "127.0.0.1", "-p", port])
            self._spawn(ws, [sys.executable, "-m", *server, "sample_site.asgi:application"],
                        self.env(ws, **extra))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(accepts_connections(p) for p in self.ports) or not self._serving():
            self.check_running()
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.2)  # a bounded poll, until the deadline

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        self.procs.append((name, subprocess.Popen(command, cwd=SITE_DIR, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT)))

    def _serving(self) -> bool:
        return all("serving" in (self.workdir / f"{ts}.log").read_text() for ts in ("ts-a", "ts-b"))

    def log_of(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log_of(name)[-3000:]}" for name, _ in self.procs)

    def check_running(self) -> None:
        for name, proc in self.procs:
            assert proc.poll() is None, f"{name} exited {proc.returncode}\n{self.logs()}"

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for redis in self.redis:
            redis.stop()


class Browser:
    """A user's HTTP session with the site: cookies, CSRF, login through the login form."""

    def __init__(self, cluster: SampleCluster) -> None:
        self.base = cluster.http
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.cookies if c.name == name), None)

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def login(self, username: str) -> None:
        status, _ = self.request("GET", "/login/")
        assert status == 200
        form = urllib.parse.urlencode({"username": username, "password": PASSWORD,
                                       "csrfmiddlewaretoken": self.cookie("csrftoken")})
        self.request("POST", "/login/", form.encode(),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        assert self.cookie("sessionid"), f"{username} is not logged in"

    def post_form(self, path: str, fields: dict) -> tuple[int, bytes]:
        return self.request("POST", path, urllib.parse.urlencode(fields).encode(), {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-CSRFToken": self.cookie("csrftoken") or ""})

    def token(self) -> str:
        status, body = self.request("GET", "/dps/token/")
        assert status == 200, body
        return json.loads(body)["token"]


def api_publish(cluster: SampleCluster, body: bytes, key: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    status, raw = Browser(cluster).request("POST", "/dps/api/publish", body, headers)
    return status, json.loads(raw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleCluster]:
    sample = SampleCluster(tmp_path_factory.mktemp("sample-site"))
    try:
        sample.start()
        yield sample
    finally:
        sample.stop()


@pytest.fixture(scope="module")
def browsers(cluster: SampleCluster) -> dict[str, Browser]:
    logged_in = {}
    for name in ("alice", "bob", "carol"):
        logged_in[name] = Browser(cluster)
        logged_in[name].login(name)
    return logged_in


@pytest.fixture(scope="module")
def phoenix_js(cluster: SampleCluster, browsers: dict[str, Browser]) -> dict:
    """One run of the phoenix.js script; the Python side acts where it asks. Returns each
    scenario's result and what the Python side observed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the sample site's phoenix.js test needs Node.js")
    config = {"urls": [f"ws://127.0.0.1:{p}/socket" for p in cluster.ports[:2]],
              "tokens": {name: b.token() for name, b in browsers.items()},
              "ids": cluster.ids}
    proc = subprocess.Popen([node, str(NODE_SCRIPT), json.dumps(config)], cwd=NODE_SCRIPT.parent,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    outcome: dict = {"scenarios": {}, "observed": {}}
    deadline = time.monotonic() + SCRIPT_TIMEOUT_S
    try:
        for line in proc.stdout:
            assert time.monotonic() < deadline, "the phoenix.js script took too long"
            message = json.loads(line)
            if "await" in message:
                outcome["observed"][message["await"]] = ACTIONS[message["await"]](cluster, browsers)
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif "scenario" in message:
                outcome["scenarios"][message["scenario"]] = message
            elif "summary" in message:
                outcome["summary"] = message["summary"]
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    outcome["stderr"] = proc.stderr.read()
    return outcome


def publish_from_django(cluster: SampleCluster, browsers: dict[str, Browser]) -> dict:
    """A view, then the HTTP API, then dps_publish: each done before the next starts."""
    observed = {}
    status, _ = browsers["alice"].post_form("/rooms/lobby/announce", {"text": "from view"})
    observed["view"] = status
    good = json.dumps({"topic": "rooms:lobby", "event": "api",
                       "payload": {"text": "from api"}}).encode()
    observed["api_without_key"] = api_publish(cluster, good, None)
    observed["api_wrong_key"] = api_publish(cluster, good, "not-the-key")
    observed["api_not_json"] = api_publish(cluster, b"{nope", API_KEY)
    observed["api_missing_field"] = api_publish(cluster, b'{"topic": "rooms:lobby"}', API_KEY)
    observed["api_unserved_topic"] = api_publish(
        cluster, b'{"topic": "elsewhere:x", "event": "e", "payload": {}}', API_KEY)
    observed["api"] = api_publish(cluster, good, API_KEY)
    observed["cli"] = cluster.manage("dps_publish", "rooms:lobby", "cli",
                                     json.dumps({"text": "from cli"}))
    return observed


def disconnect_alice(cluster: SampleCluster, browsers: dict[str, Browser]) -> str:
    return cluster.manage("shell", "-c", (
        "from django.contrib.auth.models import User; from topics.api import disconnect\n"
        "disconnect(User.objects.get(username='alice')); print('disconnected')"))


ACTIONS = {"server_publishes": publish_from_django, "disconnect_alice": disconnect_alice}


def scenario(outcome: dict, name: str) -> dict:
    result = outcome["scenarios"].get(name)
    assert result is not None, f"{name} did not run: {outcome.get('stderr', '')[-3000:]}"
    assert result["ok"], result.get("error")
    return result["details"]


# --- phoenix.js on the sample site, anonymous off ------------------------------------------------


def test_phoenix_js_connects_with_a_token_from_the_token_view(phoenix_js):
    assert scenario(phoenix_js, "token_connects_and_member_joins") == {"alice": {"room": "lobby"}}


def test_phoenix_js_without_a_token_is_refused(phoenix_js):
    scenario(phoenix_js, "without_token_never_opens")


def test_a_non_members_join_is_unauthorized_and_a_members_succeeds(phoenix_js):
    assert scenario(phoenix_js, "non_member_join_unauthorized") == {"reason": "unauthorized"}


def test_a_transforming_handler_changes_what_every_member_on_both_nodes_gets(phoenix_js, cluster):
    assert scenario(phoenix_js, "transformed_publish_reaches_both_nodes") == {
        "text": "hello", "from": cluster.ids["alice"]}


def test_a_raising_handler_crashes_that_channel_which_rejoins_and_logs_one_traceback(
        phoenix_js, cluster):
    assert scenario(phoenix_js, "raising_handler_crashes_that_channel_which_rejoins") == {
        "errors": 1, "rejoined": True}
    log = cluster.log_of("ws-a")
    assert log.count("RuntimeError: RoomTopic crashed on purpose") == 1
    assert log.count("Traceback (most recent call last)") == 1


def test_a_view_the_http_api_and_dps_publish_reach_both_nodes_in_order(phoenix_js):
    scenario(phoenix_js, "django_publishes_in_order_with_client_publishes")
    observed = phoenix_js["observed"]["server_publishes"]
    assert observed["view"] == 200
    assert observed["api"] == (202, {"status": "accepted"})
    assert "published cli to rooms:lobby" in observed["cli"]


def test_the_http_api_answers_401_and_400_with_a_reason(phoenix_js):
    observed = phoenix_js["observed"]["server_publishes"]
    for case in ("api_without_key", "api_wrong_key"):
        assert observed[case][0] == 401 and "API key" in observed[case][1]["error"]
    assert observed["api_not_json"][0] == 400 and "JSON object" in observed["api_not_json"][1]["error"]
    assert observed["api_missing_field"] == (400, {"error": "missing field(s): event, payload"})
    assert observed["api_unserved_topic"][0] == 400
    assert "no DPS_TOPICS pattern" in observed["api_unserved_topic"][1]["error"]


def test_disconnect_closes_that_users_sockets_on_both_nodes_and_no_one_elses(phoenix_js):
    assert scenario(phoenix_js, "disconnect_closes_only_that_users_sockets") == {
        "alice": [1001], "alice2": [1001]}
    assert phoenix_js["summary"]["failed"] == []


# --- handshake statuses (the websockets client) ----------------------------------------------


async def handshake_status(url: str, **kwargs) -> int:
    """101 when the socket opens (then closed), else the HTTP status of the refusal."""
    try:
        async with websockets.connect(url, open_timeout=10, **kwargs):
            return 101
    except websockets.exceptions.InvalidStatus as refusal:
        return refusal.response.status_code


def signed(payload: dict) -> str:
    return signing.dumps(payload, key=SECRET_KEY, salt=TOKEN_SALT)


async def test_anonymous_expired_tampered_and_foreign_origin_handshakes_get_403(
        cluster, browsers):
    status, body = Browser(cluster).request("GET", "/dps/token/")  # not logged in
    assert status == 403 and "log in" in json.loads(body)["error"]
    token = browsers["bob"].token()
    assert await handshake_status(cluster.socket_url(0, "&token=" + token)) == 101
    assert await handshake_status(cluster.socket_url(0)) == 403
    expired = signed({"u": cluster.ids["bob"], "exp": time.time() - 1})
    assert await handshake_status(cluster.socket_url(0, "&token=" + expired)) == 403
    # Alice's claims under the signature of Bob's token.
    genuine = signed({"u": cluster.ids["bob"], "exp": time.time() + 60})
    claims = signed({"u": cluster.ids["alice"], "exp": time.time() + 60}).split(":", 1)[0]
    tampered = claims + genuine[genuine.index(":"):]
    assert tampered != genuine
    assert await handshake_status(cluster.socket_url(1, "&token=" + tampered)) == 403
    assert await handshake_status(cluster.socket_url(1, "&token=" + token),
                                  origin="https://evil.example.net") == 403


async def test_a_same_origin_page_connects_with_its_session(cluster, browsers):
    session = f"sessionid={browsers['bob'].cookie('sessionid')}"
    url = cluster.socket_url(1)
    async with websockets.connect(url, origin=cluster.http,
                                  additional_headers={"Cookie": session}) as ws:
        await ws.send(json.dumps(["1", "1", "rooms:lobby", "phx_join", {}]))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply == ["1", "1", "rooms:lobby", "phx_reply",
                         {"status": "ok", "response": {"room": "lobby"}}]
    # A foreign page with the same cookie gets nothing, nor one on another port of the host.
    for foreign in ("https://evil.example.net", "http://127.0.0.1:9"):
        assert await handshake_status(url, origin=foreign,
                                      additional_headers={"Cookie": session}) == 403


@pytest.fixture(scope="module")
def tokens(cluster: SampleCluster) -> dict[str, str]:
    return {name: cluster.manage("dps_token", name, "--ttl", "600").strip()
            for name in ("dave", "erin", "frank")}


@pytest.mark.parametrize("node", [2, 3], ids=["daphne", "uvicorn"])
async def test_connections_past_the_identity_limit_get_429_and_past_the_node_limit_503(
        cluster, tokens, node):
    dave, erin, frank = tokens["dave"], tokens["erin"], tokens["frank"]
    url = cluster.socket_url(node)
    async with websockets.connect(url + "&token=" + dave), \
            websockets.connect(url + "&token=" + dave):
        assert await handshake_status(url + "&token=" + dave) == 429
        async with websockets.connect(url + "&token=" + erin):
            assert await handshake_status(url + "&token=" + frank) == 503


# --- a same-origin page in a real browser ------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_a_logged_in_room_page_joins_with_its_session_in_a_real_browser(cluster):
    from playwright.sync_api import sync_playwright

    def open_room(browser, node: int, username: str):
        page = browser.new_context().new_page()
        page.goto(f"http://127.0.0.1:{cluster.ports[node]}/rooms/lobby/")  # → the login form
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/rooms/lobby/")
        return page

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            member = open_room(browser, 1, "bob")
            outsider = open_room(browser, 0, "carol")
            member.wait_for_function("document.getElementById('state').textContent === 'joined'")
            outsider.wait_for_function(
                "document.getElementById('state').textContent === 'refused unauthorized'")
            body = json.dumps({"topic": "rooms:lobby", "event": "announcement",
                               "payload": {"by": "site", "text": "to the browser"}}).encode()
            assert api_publish(cluster, body, API_KEY)[0] == 202
            member.wait_for_selector("#messages li")
            assert member.inner_text("#messages li") == "site: to the browser"
            assert outsider.locator("#messages li").count() == 0
        finally:
            browser.close()
