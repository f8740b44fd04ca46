"""The operator's view on a real cluster: pages and /metrics agree with known activity.

One 2 WS + 2 TS cluster (daphne, DEBUG off) for the module. Seven sockets join three topics
(7 members) and publish 50 messages; then the cluster page, the topics page, a topic's page and
every node's /metrics (parsed with prometheus_client's text parser) must show exactly those
figures. A headless Chromium logs in and looks at every page; the last test SIGSTOPs a topic
server and the pages show it down.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.admin_session import Browser
from tests.support.phoenix_client import PhoenixClient
from tests.support.waiting import wait_until
from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import PROJECT_DIR, LocalCluster

# topic -> (members on ws-a, members on ws-b, publishes, the WS node that publishes)
ACTIVITY = {"alpha": (2, 1, 20, 0), "beta": (1, 1, 20, 0), "gamma": (0, 2, 10, 1)}
PASSWORD = "operator-test-" + os.urandom(6).hex()
TIMEOUT = 30.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Activity:
    """The sockets of the test on their own thread and loop; they stay open until close()."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> Activity:
        self._thread.start()
        if not self.done.wait(60) or self.error:
            raise AssertionError(f"the activity did not complete: {self.error!r}")
        return self

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        clients: list[PhoenixClient] = []
        try:
            members: dict[str, list[PhoenixClient]] = {}
            for topic, (on_a, on_b, _, _) in ACTIVITY.items():
                for index, count in ((0, on_a), (1, on_b)):
                    for _ in range(count):
                        client = await PhoenixClient.connect(self.urls[index])
                        clients.append(client)
                        await client.join_ok(f"topics:{topic}")
                        members.setdefault(topic, []).append((index, client))
            for topic, (_, _, publishes, node) in ACTIVITY.items():
                publisher = next(c for i, c in members[topic] if i == node)
                for n in range(publishes):
                    reply = await publisher.publish(f"topics:{topic}", "event", {"n": n})
                    assert reply.status == "ok", reply
                for _, client in members[topic]:
                    await client.wait_for(lambda f, t=topic, p=publishes: f.is_push
                                          and f.topic == f"topics:{t}" and f.payload["n"] == p - 1)
        except BaseException as exc:
            self.error = exc
        self.done.set()
        await self._release.wait()
        for client in clients:
            await client.close()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    workdir = tmp_path_factory.mktemp("operator")
    env = {**os.environ, "DPS_DATABASE": str(workdir / "db.sqlite3"), "DJANGO_DEBUG": "0",
           "DJANGO_SECRET_KEY": "operator-view-test-" + os.urandom(16).hex(),
           "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
           "DPS_METRICS_PUBLIC": "1",  # DEBUG is off: /metrics is opened on purpose
           "DPS_LAYER": json.dumps({"stats_interval": 0.5, "heartbeat_interval": 0.5})}
    with LocalCluster(2, 2, port=free_port_block(2), base_env=env, emit=lambda line: None) as c:
        # createsuperuser works as usual (runcluster itself creates an account only when run
        # as the command; see test_runcluster_creates_an_admin_account).
        subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput",
                        "--username", "operator", "--email", "op@example.com"], cwd=PROJECT_DIR,
                       env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}, check=True,
                       capture_output=True)
        yield c


@pytest.fixture(scope="module")
def activity(cluster) -> Iterator[Activity]:
    running = Activity(cluster.ws_urls).start()
    yield running
    running.close()


@pytest.fixture(scope="module")
def staff(cluster) -> Browser:
    browser = Browser(f"http://127.0.0.1:{cluster.ws_nodes[0].port}")
    browser.login("operator", PASSWORD)
    return browser


def _settled(staff: Browser) -> dict:
    """The cluster JSON once every node has reported the whole activity."""
    def ready():
        data = staff.json("/admin/dps/cluster/json")
        servers = data["topic_servers"]
        if sum(s.get("member_count") or 0 for s in servers) != 7:
            return None
        ws = [n["snapshot"] for n in data["nodes"] if n["role"] == "ws"]
        if any(not s or s["counters"].get("deliveries", 0) < 60 for s in ws):
            return None
        rows = staff.json("/admin/dps/topics/json")["rows"]
        if sorted(r["messages"] for r in rows) != [10, 20, 20]:
            return None
        return data
    return wait_until(ready, what="the activity in the published stats")


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                              if k not in ("node",))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def test_static_files_are_served_with_debug_off(cluster):
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.ws_nodes[1].port}"
                                "/static/admin/css/base.css", timeout=10) as response:
        assert response.status == 200
        assert b"--header-bg" in response.read()


def test_pages_agree_with_the_activity(cluster, activity, staff):
    data = _settled(staff)
    nodes = {n["name"]: n for n in data["nodes"]}
    assert [nodes[n]["status"] for n in ("ws-a", "ws-b", "ts-a", "ts-b")] == ["up"] * 4
    assert nodes["ws-a"]["connections"] == 3 and nodes["ws-b"]["connections"] == 4
    assert all(nodes[n]["version"] and nodes[n]["boot"] for n in nodes)
    assert all(":***@" in n["redis"] or "***" not in n["redis"] for n in data["nodes"])
    servers = data["topic_servers"]
    assert sum(s["group_count"] for s in servers) == 3
    assert sum(s["member_count"] for s in servers) == 7
    assert sum(s["counters"]["published"] for s in servers) == 50
    assert abs(sum(n["share"] for n in data["ring"]["nodes"]) - 1) < 1e-9
    assert len(data["ring"]["drawing"]["groups"]) == 2
    assert sum(s["publishes_per_s"] for s in servers) > 0

    page = staff.get("/admin/dps/cluster/?topic=topics:alpha")[1].decode()
    assert page.count('class="dps-arcs"') == 2 and "hashes to" in page

    listing = staff.json("/admin/dps/topics/json")
    assert listing["total"] == 3
    by_topic = {r["topic"]: r for r in listing["rows"]}
    for topic, (on_a, on_b, publishes, _) in ACTIVITY.items():
        row = by_topic[f"topics:{topic}"]
        expected = {k: v for k, v in (("ws-a", on_a), ("ws-b", on_b)) if v}
        assert (row["members"], row["total_members"], row["messages"]) == (
            expected, on_a + on_b, publishes)
        assert sum(row["history"]) == publishes
    assert [r["topic"] for r in listing["rows"]] == ["topics:alpha", "topics:beta",
                                                     "topics:gamma"]  # by members, then name
    by_rate = staff.json("/admin/dps/topics/json?o=rate")["rows"]
    assert by_rate[-1]["topic"] == "topics:gamma"
    assert [r["topic"] for r in staff.json("/admin/dps/topics/json?q=amm")["rows"]] == [
        "topics:gamma"]
    html = staff.get("/admin/dps/topics/?q=alp")[1].decode()
    assert "topics:alpha" in html and "topics:beta" not in html

    detail = staff.json("/admin/dps/topics/topics:beta/json")
    assert detail["row"]["members"] == {"ws-a": 1, "ws-b": 1}
    assert detail["row"]["messages"] == 20 and detail["lookup"]["owner"] in ("ts-a", "ts-b")
    html = staff.get("/admin/dps/topics/topics:beta/")[1].decode()
    assert 'id="dps-rate-chart"' in html and ">20<" in html


def test_metrics_agree_with_the_activity(cluster, activity, staff):
    _settled(staff)
    ws = [_metrics(cluster.plan.metrics_url(n)) for n in cluster.ws_nodes]
    ts = [_metrics(cluster.plan.metrics_url(n)) for n in cluster.nodes if n.role == "ts"]
    assert [m["dps_connections"] for m in ws] == [3, 4]
    assert [m["dps_joins_total"] for m in ws] == [3, 4]
    assert [m["dps_publishes_total"] for m in ws] == [40, 10]
    # alpha: 20 x (2 on ws-a, 1 on ws-b); beta: 20 x (1, 1); gamma: 10 x (0, 2)
    assert [m["dps_deliveries_total"] for m in ws] == [60, 60]
    for m in ws:
        assert m["dps_publish_deliver_latency_seconds_count"] == m["dps_deliveries_total"]
        assert m["dps_publish_deliver_latency_seconds_bucket{le=+Inf}"] == 60
        assert 0 < m["dps_publish_deliver_latency_seconds_sum"] < 60
        assert m["dps_slow_client_disconnects_total"] == 0
        assert m["dps_redis_errors_total"] == 0
        assert "dps_inbox_backlog" in m and "dps_direct_frame_fallbacks_total" in m
        assert m["dps_dropped_total{reason=slow_client}"] == 0
    assert sum(m["dps_publishes_total"] for m in ts) == 50
    assert sum(m["dps_topics"] for m in ts) == 3
    assert sum(m["dps_members"] for m in ts) == 7
    assert sum(m["dps_deliveries_total"] for m in ts) == 20 * 2 + 20 * 2 + 10


def test_a_real_browser_sees_the_styled_pages(cluster, activity, staff, tmp_path):
    from playwright.sync_api import sync_playwright

    _settled(staff)
    shots = Path(os.environ.get("DPS_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{cluster.ws_nodes[0].port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/admin/login/?next=/admin/dps/cluster/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/dps/cluster/")
        # The admin's stylesheet applied: its header colour, not the browser's default.
        header = page.eval_on_selector("#header", "e => getComputedStyle(e).backgroundColor")
        assert header not in ("rgba(0, 0, 0, 0)", "transparent"), header
        assert page.eval_on_selector(".breadcrumbs", "e => getComputedStyle(e).display") != "none"
        assert page.locator("#dps-ring-svg g.dps-arcs").count() == 2
        assert page.locator("#dps-ring-svg circle.dps-marker").count() == 3
        page.screenshot(path=str(shots / "cluster.png"), full_page=True)

        page.goto(f"{base}/admin/dps/topics/")
        page.fill("#searchbar", "a")
        page.click("#changelist-search input[type=submit]")
        page.wait_for_url("**q=a**")
        assert page.locator("#result_list tbody tr").count() == 3
        page.click("th.column-rate a")
        page.wait_for_url("**o=rate**")
        assert page.locator("th.column-rate.sorted").count() == 1
        assert page.locator("#result_list tbody tr").last.get_attribute(
            "data-topic") == "topics:gamma"
        page.screenshot(path=str(shots / "topics.png"), full_page=True)

        page.click("a:text('topics:alpha')")
        page.wait_for_url("**/topics/topics:alpha/")
        assert page.locator("#dps-rate-chart rect").count() > 0
        assert page.inner_text("#dps-topic-owner-name") in ("ts-a", "ts-b")
        page.screenshot(path=str(shots / "topic.png"), full_page=True)
        light = page.eval_on_selector("body", "e => getComputedStyle(e).backgroundColor")

        # Dark mode: the admin's theme follows the browser's colour scheme.
        dark = browser.new_context(color_scheme="dark", viewport={"width": 1280, "height": 900},
                                   storage_state=page.context.storage_state()).new_page()
        dark.goto(f"{base}/admin/dps/cluster/")
        assert dark.eval_on_selector("body", "e => getComputedStyle(e).backgroundColor") != light
        dark.screenshot(path=str(shots / "cluster-dark.png"), full_page=True)
        browser.close()
    assert all((shots / f"{name}.png").stat().st_size > 10_000
               for name in ("cluster", "topics", "topic", "cluster-dark"))


def test_metrics_need_the_bearer_token_when_it_is_set(tmp_path):
    from topics.operator.prometheus_export import metrics_wsgi_app, registry_for

    class Empty:
        def collect(self):
            return iter(())

    app = metrics_wsgi_app(registry_for(Empty()), "s3cret")
    statuses = []
    for header in (None, "Bearer wrong", "Bearer s3cret"):
        environ = {"PATH_INFO": "/metrics"} | ({"HTTP_AUTHORIZATION": header} if header else {})
        app(environ, lambda status, headers: statuses.append(status.split()[0]))
    assert statuses == ["401", "401", "200"]
    statuses.clear()
    for public in (False, True):
        metrics_wsgi_app(registry_for(Empty()), "", public)(
            {"PATH_INFO": "/metrics"}, lambda status, headers: statuses.append(status.split()[0]))
    assert statuses == ["403", "200"]


def test_a_stopped_topic_server_is_shown_down(cluster, activity, staff):
    _settled(staff)
    stopped = cluster.pid_of("ts-a")
    os.killpg(stopped, signal.SIGSTOP)
    try:
        data = wait_until(lambda: (d := staff.json("/admin/dps/cluster/json")) and next(
            n for n in d["nodes"] if n["name"] == "ts-a")["status"] == "down" and d,
            what="ts-a shown down")
        assert next(n for n in data["nodes"] if n["name"] == "ts-b")["status"] == "up"
        assert [g["down"] for g in data["ring"]["drawing"]["groups"]] == [True, False]
        started = time.monotonic()
        status, body = staff.get("/admin/dps/cluster/")
        assert status == 200 and time.monotonic() - started < 2.0
        html = body.decode()
        assert re.search(r'class="dps-arcs dps-down" data-node="ts-a"[^>]*>\s*<title>ts-a \(down\)',
                         html)
        assert 'class="dps-node dps-down" data-node="ts-a"' in html
        assert staff.get("/admin/dps/topics/")[0] == 200
        assert staff.get("/admin/dps/topics/topics:alpha/")[0] == 200
    finally:
        os.killpg(stopped, signal.SIGCONT)


def test_a_stopped_redis_costs_the_pages_at_most_the_admin_timeout(cluster, activity, staff):
    redis_pid = cluster.redis_pid("ts-b")
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        data = staff.json("/admin/dps/cluster/json")
        elapsed = time.monotonic() - started
        ts_b = next(n for n in data["nodes"] if n["name"] == "ts-b")
        assert ts_b["status"] == "unreachable" and "***" not in ts_b["redis"]
        # One probe per Redis, in parallel: connect (answered by the kernel) then a read that
        # times out after DPS_ADMIN_REDIS_TIMEOUT (0.5 s).
        assert data["read_seconds"] < 1.5 and elapsed < 3.0
        listing = staff.json("/admin/dps/topics/json")
        assert [e["node"] for e in listing["errors"]] == ["ts-b"]
        assert listing["read_seconds"] < 1.5
        assert staff.get("/admin/dps/topics/")[0] == 200
    finally:
        os.kill(redis_pid, signal.SIGCONT)

