"""phoenix.js 1.8 and 1.7 (npm ``phoenix`` and ``phoenix17``, ``tests/interop/driver.mjs``)
through what a Phoenix app relies on beyond join and publish: ``authToken``, a server
``disconnect`` followed by the client's reconnect, a crashing handler followed by the client's
rejoin, and presence updates. The cluster runs ``tests.e2e.phoenix_settings`` (``fidelity:*``
topics, whose handler crashes, updates presence or disconnects on a client's push) with
anonymous sockets refused, so every client connects with a token.

A long-poll session surviving its node's restart, for both versions, is
``tests/e2e/test_longpoll_nodes.py``; a V1 envelope client without ``vsn`` is
``tests/e2e/test_e2e_phoenix.py``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import websockets

from tests.support.phoenix_client import socket_url
from tests.support.phoenix_driver import DriverError, PhoenixDriver
from tests.support.waiting import wait_until
from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import ClusterError, LocalCluster

pytestmark = pytest.mark.e2e

VERSIONS = ["phoenix", "phoenix17"]  # 1.8.x and 1.7.x
USERS = ("alice", "bob")
TIMEOUT = 20.0


class Site:
    def __init__(self, cluster: LocalCluster, log: list[str], tokens: dict[str, str],
                 ids: dict[str, str]) -> None:
        self.cluster, self.log, self.tokens, self.ids = cluster, log, tokens, ids

    def url(self, node: int = 0) -> str:
        """The socket endpoint phoenix.js is given (it appends ``/websocket?vsn=2.0.0``)."""
        return f"ws://127.0.0.1:{self.cluster.ws_nodes[node].port}/socket"


def _make_users(cluster: LocalCluster) -> tuple[dict[str, str], dict[str, str]]:
    """Users in the cluster's database, and a token for each signed with the cluster's key."""
    code = ("import json; from django.contrib.auth.models import User; "
            "from topics.api import issue_token; "
            f"users = [User.objects.create_user(n) for n in {USERS!r}]; "
            "print(json.dumps({u.username: [issue_token(u), str(u.pk)] for u in users}))")
    result = subprocess.run([sys.executable, "-m", "django", "shell", "-c", code],
                            cwd=cluster.plan.project.directory, capture_output=True, text=True,
                            env=cluster.plan.child_env(cluster.workdir), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    made = json.loads(result.stdout.strip().splitlines()[-1])
    return {n: t for n, (t, _) in made.items()}, {n: pk for n, (_, pk) in made.items()}


def _site(tmp_path_factory: pytest.TempPathFactory, server: str, ws: int) -> Iterator[Site]:
    log: list[str] = []
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.e2e.phoenix_settings",
           "DPS_ALLOW_ANONYMOUS": "0",
           "DPS_DATABASE": str(tmp_path_factory.mktemp(f"phx-{server}") / "db.sqlite3")}
    cluster = LocalCluster(ws=ws, ts=1, port=free_port_block(ws), server=server,
                           emit=log.append, base_env=env)
    try:
        try:
            cluster.start()
            tokens, ids = _make_users(cluster)
        except (ClusterError, OSError, AssertionError) as exc:
            pytest.fail(f"the cluster did not start: {exc}\n" + "\n".join(log[-60:]))
        site = Site(cluster, log, tokens, ids)
        with PhoenixDriver() as js:  # ready: a phoenix.js join round-trips on every node
            for node in range(ws):
                js.connect(f"ready{node}", url=site.url(node), params={"token": tokens["bob"]})
                wait_until(lambda n=node: _joins(js, f"ready{n}", f"fidelity:ready{n}"),
                           60, f"a join through WS node {node}")
        yield site
    finally:
        cluster.stop()


def _joins(js: PhoenixDriver, client: str, topic: str) -> bool:
    try:
        js.join(client, topic)
        return True
    except DriverError:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Two WS nodes under daphne and a topic server."""
    yield from _site(tmp_path_factory, "daphne", ws=2)


@pytest.fixture(scope="module")
def uvicorn_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from _site(tmp_path_factory, "uvicorn", ws=1)


def fresh(name: str) -> str:
    return f"fidelity:{name}{uuid.uuid4().hex[:10]}"


def events(js: PhoenixDriver, client: str, topic: str, kind: str) -> list[dict]:
    return [e for e in js.events(client, topic) if e["kind"] == kind]


# --- authToken ----------------------------------------------------------------------------


def auth_token_protocol(token: str) -> str:
    """What phoenix.js 1.8 offers for ``authToken``: ``btoa(token)`` without its padding."""
    return "base64url.bearer.phx." + base64.b64encode(token.encode()).decode().rstrip("=")


async def _handshake(url: str, protocols: list[str]) -> tuple[int, str | None]:
    try:
        async with websockets.connect(url, subprotocols=protocols, open_timeout=10) as ws:
            return 101, ws.subprotocol
    except websockets.exceptions.InvalidStatus as refusal:
        return refusal.response.status_code, None


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_phoenix_js_authtoken_connects_and_names_its_user(request, server: str):
    """phoenix.js 1.8's ``authToken`` (1.7 has no such option: its clients pass ``params``,
    which every other test here does). Before, the node echoed no subprotocol and phoenix.js
    failed with "Server sent no subprotocol", reconnecting in a loop (1006, five times in
    1.5 s)."""
    site: Site = request.getfixturevalue("site" if server == "daphne" else "uvicorn_site")
    topic = fresh("auth")
    token = site.tokens["alice"]
    with PhoenixDriver() as js:
        js.connect("a", url=site.url(), authToken=token)  # no params: the token alone
        js.join("a", topic)
        presence = wait_until(lambda: js.presence("a", topic), TIMEOUT, "alice's presence")
        assert list(presence) == [site.ids["alice"]]  # the token's user, not anonymous
        assert js.closes("a") == []
        if server == "daphne":  # and on long-poll, where it is the X-Phoenix-AuthToken header
            js.connect("lp", url=site.url(1), authToken=site.tokens["bob"],
                       transport="longpoll")
            js.join("lp", topic)
            wait_until(lambda: len(js.presence("lp", topic)) == 2, TIMEOUT, "both present")
    endpoint = socket_url(site.cluster.ws_nodes[0].port)
    offered = ["phoenix", auth_token_protocol(token)]
    assert asyncio.run(_handshake(endpoint, offered)) == (101, "phoenix")
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert asyncio.run(_handshake(endpoint, ["phoenix", auth_token_protocol(tampered)])) == (
        403, None)
    assert token not in "\n".join(site.log)  # never logged, by DPS or the server


# --- disconnect, crash, presence: both versions ---------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_disconnect_closes_with_1001_and_phoenix_js_reconnects_and_rejoins(site: Site,
                                                                           version: str):
    """``topics.api.disconnect`` (here from the topic's handler, on the client's push) closes
    with 1001, as Phoenix's ``disconnect`` broadcast; every phoenix.js version reconnects after
    it (1.7.x and 1.8 up to 1.8.12 stayed closed after the 1000 DPS used to send)."""
    topic = fresh("bye")
    with PhoenixDriver() as js:
        js.connect("a", url=site.url(), params={"token": site.tokens["alice"]}, version=version)
        js.join("a", topic)
        js.cast("a", topic, event="disconnect_me")
        wait_until(lambda: js.closes("a"), TIMEOUT, "the server's close")
        assert js.closes("a")[0] == 1001
        wait_until(lambda: len(js.replies("a", topic)) == 2, TIMEOUT,
                   "the reconnect and the rejoin")
        assert js.push("a", topic, event="hello", payload={"n": 1}) == {}


@pytest.mark.parametrize("version", VERSIONS)
def test_a_crashing_handler_errors_the_channel_and_phoenix_js_rejoins(site: Site, version: str):
    """Before, a raising handle_in answered ``internal error`` and the channel stayed joined;
    now, as in Phoenix, the channel is left with ``phx_error``, ``onError`` fires and phoenix.js
    rejoins; a join that raises is answered ``join crashed``."""
    topic = fresh("crash")
    with PhoenixDriver() as js:
        js.connect("a", url=site.url(), params={"token": site.tokens["alice"]}, version=version)
        js.connect("b", url=site.url(1), params={"token": site.tokens["bob"]}, version=version)
        js.join("a", topic)
        js.join("b", topic)
        js.listen("b", topic, event="hello")
        js.cast("a", topic, event="crash")
        wait_until(lambda: events(js, "a", topic, "error"), TIMEOUT, "alice's onError")
        wait_until(lambda: len(events(js, "a", topic, "joined")) == 2, TIMEOUT, "the rejoin")
        kinds = [e["kind"] for e in js.events("a", topic) if e["kind"] in ("error", "joined")]
        assert kinds == ["joined", "error", "joined"]
        assert js.push("a", topic, event="hello", payload={"after": "rejoin"}) == {}
        wait_until(lambda: js.heard("b", topic, event="hello"), TIMEOUT, "bob hears it")
        assert js.heard("b", topic, event="hello") == [{"after": "rejoin"}]
        assert js.closes("a") == [] and js.closes("b") == []  # the sockets were not touched
        with pytest.raises(DriverError, match="join crashed"):
            js.join("a", fresh("crash"), payload={"crash": True})
    log = "\n".join(site.log)
    assert "FidelityTopic.handle_in crashed on purpose" in log


@pytest.mark.parametrize("version", VERSIONS)
def test_a_presence_update_reaches_phoenix_js_presence_with_phx_ref_prev(site: Site,
                                                                         version: str):
    """``topics.api.presence_update`` (Phoenix's ``Presence.update``, called by the handler on
    alice's push): bob's ``Presence`` sees the new meta join with ``phx_ref_prev`` while the
    old one is still current, then the old one leave; alice never leaves its list."""
    topic = fresh("away")
    alice = site.ids["alice"]
    with PhoenixDriver() as js:
        js.connect("a", url=site.url(0), params={"token": site.tokens["alice"]}, version=version)
        js.connect("b", url=site.url(1), params={"token": site.tokens["bob"]}, version=version)
        js.join("a", topic)
        js.join("b", topic)
        listed = wait_until(lambda: alice in js.presence("b", topic) and js.presence("b", topic),
                            TIMEOUT, "alice in bob's presence")
        [old_ref] = listed[alice]
        assert js.push("a", topic, event="status", payload={"status": "away"}) == {}
        wait_until(lambda: events(js, "b", topic, "presence_leave"), TIMEOUT, "the diff")
        changes = [e for e in js.events("b", topic)
                   if e["kind"].startswith("presence_") and e["key"] == alice]
        *_, joined, left = changes
        assert joined["kind"] == "presence_join" and left["kind"] == "presence_leave"
        [new_meta] = joined["joined"]["metas"]
        assert new_meta["status"] == "away" and new_meta["phx_ref_prev"] == old_ref
        assert [m["phx_ref"] for m in joined["current"]["metas"]] == [old_ref]
        assert [m["phx_ref"] for m in left["left"]["metas"]] == [old_ref]
        assert [m["phx_ref"] for m in left["current"]["metas"]] == [new_meta["phx_ref"]]
        assert js.presence("b", topic)[alice] == [new_meta["phx_ref"]]
        assert js.presence("a", topic)[alice] == [new_meta["phx_ref"]]
