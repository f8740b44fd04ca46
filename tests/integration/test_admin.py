"""The admin's cluster page (/admin/dps/cluster/) and its JSON twin: access, content, secrets."""
from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from channel_layer.ring import Ring
from channel_layer.settings import LayerSettings
from tests.support.inproc import TopicServerThread, cluster_of
from tests.support.waiting import wait_until
from topics.operator import cluster_stats

PAGE = "/admin/dps/cluster/"
JSON = "/admin/dps/cluster/json"
SECRET_URL = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1

pytestmark = pytest.mark.django_db


def _use_layer(settings, cluster: dict | None = None, node: str | None = None):
    """Make the default channel layer a fresh DPS layer on ``cluster`` (embedded when None)."""
    config = {} if cluster is None else {"cluster": cluster, "node": node}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channel_layer.DPSChannelLayer",
                                           "CONFIG": config}}
    return get_channel_layer()


@pytest.fixture
def layers():
    made = []
    yield made
    for layer in made:
        async_to_sync(layer.close)()


def _nodes(urls: dict[str, str]) -> dict:
    return {"nodes": [{"name": n, "role": n.split("-")[0], "redis": u} for n, u in urls.items()]}


def _wait_for(client, ready, timeout: float = 5.0) -> dict:
    """The JSON endpoint's data once ``ready(data)`` (the TS publishes stats periodically)."""
    return wait_until(lambda: data if ready(data := client.get(JSON).json()) else None, timeout,
                      "the admin's JSON to show it", interval=0.1)


def _synced(node: str):
    # A TS that first hears of a WS node asks it for a snapshot (RESYNC / SYNC) and rebuilds
    # that node's groups from it; publish after that so the message count is not reset.
    return lambda data: data["topic_servers"][0].get("ws_nodes", {}).get(node, {}).get("synced")


def _row(data: dict, group: str) -> dict | None:
    return next((r for r in data["hot_topics"]["rows"] if r["group"] == group), None)


def _publish_and_wait(client, layer, group: str, count: int = 3) -> dict:
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    _wait_for(client, _synced(layer.node))
    for i in range(count):
        async_to_sync(layer.group_send)(group, {"type": "chat.message", "n": i})
    for _ in range(count):
        async_to_sync(layer.receive)(channel)
    return _wait_for(client, lambda data: (_row(data, group) or {}).get("messages") == count)


# ------------------------------------------------------------------------------ access
# Every DPS page and JSON endpoint.
DPS_URLS = [PAGE, JSON, "/admin/dps/topics/", "/admin/dps/topics/json",
            "/admin/dps/topics/topics:matrix/", "/admin/dps/topics/topics:matrix/json"]


@pytest.mark.parametrize("url", DPS_URLS)
def test_anonymous_is_sent_to_the_login_page(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", DPS_URLS)
def test_a_user_who_is_not_staff_gets_no_data(client, django_user_model, url):
    client.force_login(django_user_model.objects.create_user("visitor", password="pw"))
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert b"local-ts" not in response.content


@pytest.mark.parametrize("url", DPS_URLS)
def test_staff_gets_every_page(admin_client, url):
    assert admin_client.get(url).status_code == 200


def test_metrics_answer_401_without_the_token_when_one_is_set(client, settings):
    settings.DPS_METRICS_TOKEN = "t0ken"
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert b"dps_" not in refused.content
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    granted = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t0ken")
    assert granted.status_code == 200 and b"dps_joins_total" in granted.content


def test_metrics_without_a_token_are_closed_unless_opened_on_purpose(client, settings):
    settings.DPS_METRICS_TOKEN = ""
    settings.DPS_METRICS_PUBLIC = False
    closed = client.get("/metrics")
    assert closed.status_code == 403 and b"DPS_METRICS_TOKEN" in closed.content
    assert b"dps_" not in closed.content.replace(b"DPS_METRICS", b"")
    settings.DPS_METRICS_PUBLIC = True
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")


def test_metrics_are_public_by_default_only_with_debug_on(client, settings):
    from topics.operator.prometheus_export import access_settings

    del settings.DPS_METRICS_PUBLIC  # a site without the setting
    settings.DPS_METRICS_TOKEN = ""
    settings.DEBUG = False
    assert access_settings() == ("", False) and client.get("/metrics").status_code == 403
    settings.DEBUG = True
    assert access_settings() == ("", True)


def test_the_admin_index_links_to_the_cluster_page(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    assert PAGE.encode() in response.content


# ---------------------------------------------------------------------------- content
def test_staff_sees_the_embedded_cluster_nodes_and_ring(admin_client):
    response = admin_client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("local", "local-ts", "Ring", "Hot topics", "This process"):
        assert text in html


def test_json_has_every_section(admin_client, settings, layers):
    layers.append(_use_layer(settings, _nodes({"ws-a": SECRET_URL, "ts-a": SECRET_URL}), "ws-a"))
    data = admin_client.get(JSON, {"topic": "topics:matrix"}).json()
    assert set(data) == {"generated", "cluster", "nodes", "ring", "topic_servers", "hot_topics",
                         "local", "read_seconds"}
    assert [(n["name"], n["role"]) for n in data["nodes"]] == [("ws-a", "ws"), ("ts-a", "ts")]
    assert [n["node"] for n in data["ring"]["nodes"]] == ["ts-a"]
    assert data["ring"]["nodes"][0]["share"] == 1.0
    lookup = data["ring"]["lookup"]
    assert lookup == {**lookup, "query": "topics:matrix", "group": "topics.matrix",
                      "owner": "ts-a", "error": None}
    assert int(lookup["hash"], 16) == Ring(["ts-a"]).position_of("topics.matrix")
    assert data["hot_topics"] == {"query": "", "matched": 0, "top": cluster_stats.TOP_TOPICS,
                                  "rows": []}
    assert data["local"]["node"] == "ws-a"
    assert data["local"]["started"] is False


def test_owner_lookup_splits_topics_over_the_ring_and_rejects_bad_names():
    cluster = cluster_of({"ws-a": "redis://h:1/0", "ts-a": "redis://h:2/0",
                          "ts-b": "redis://h:3/0"})
    view = cluster_stats.ring_view(cluster, "topics:x!")
    assert abs(sum(n["share"] for n in view["nodes"]) - 1.0) < 1e-9
    assert all(0.2 < n["share"] < 0.8 for n in view["nodes"])
    assert view["lookup"]["owner"] is None and view["lookup"]["error"]
    lookup = cluster_stats.owner_lookup(Ring(["ts-a", "ts-b"]), "topics:matrix")
    assert lookup["owner"] == Ring(["ts-a", "ts-b"]).owner_of("topics.matrix")


def test_a_password_never_appears_and_a_dead_redis_is_marked_unreachable(admin_client, settings,
                                                                          layers):
    layers.append(_use_layer(settings, _nodes({"ws-a": SECRET_URL, "ts-a": SECRET_URL}), "ws-a"))
    page = admin_client.get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    assert "unreachable" in html and "redis://:***@127.0.0.1:1/0" in html
    data = admin_client.get(JSON).json()
    assert [n["reachable"] for n in data["nodes"]] == [False, False]
    assert data["topic_servers"][0]["status"] == cluster_stats.UNREACHABLE
    for body in (page.content, admin_client.get(JSON).content):
        assert b"s3cret" not in body


def test_a_topic_server_without_stats_is_shown_down(admin_client, settings, layers, redis_server):
    layers.append(_use_layer(settings, _nodes({"ws-a": redis_server.url,
                                               "ts-a": redis_server.url}), "ws-a"))
    data = admin_client.get(JSON).json()
    assert [n["reachable"] for n in data["nodes"]] == [True, True]
    assert data["topic_servers"][0]["status"] == cluster_stats.NO_STATS
    assert "down / no stats" in admin_client.get(PAGE).content.decode()


def test_live_stats_show_a_group_with_its_messages_and_members(admin_client, settings, layers,
                                                               redis_factory):
    urls = {"ws-a": redis_factory().url, "ts-a": redis_factory().url}
    server = TopicServerThread(cluster_of(urls),
                               settings=LayerSettings(stats_interval=0.2, startup_sync_timeout=0.2))
    with server:
        layer = _use_layer(settings, _nodes(urls), "ws-a")
        layers.append(layer)
        data = _publish_and_wait(admin_client, layer, "topics.matrix")
        row = _row(data, "topics.matrix")
        assert row == {**row, "topic": "topics:matrix", "owner": "ts-a", "members": {"ws-a": 1},
                       "total_members": 1, "messages": 3}
        ts = data["topic_servers"][0]
        assert ts["status"] == cluster_stats.UP and ts["group_count"] == 1
        assert data["local"]["groups"] == 1 and data["local"]["started"] is True
        assert data["local"]["runtime_loop"] == "thread"  # a test process is not a server

        html = admin_client.get(PAGE, {"q": "matr"}).content.decode()
        assert "topics:matrix" in html and "<td>3</td>" in html and "ws-a: 1" in html
        assert admin_client.get(JSON, {"q": "nomatch"}).json()["hot_topics"]["rows"] == []


def test_the_embedded_cluster_reads_its_in_process_topic_server(admin_client, settings, layers):
    layer = _use_layer(settings)
    layers.append(layer)
    data = _publish_and_wait(admin_client, layer, "topics.lobby")
    assert data["cluster"]["embedded"] is True
    row = _row(data, "topics.lobby")
    assert (row["owner"], row["members"], row["messages"]) == ("local-ts", {"local": 1}, 3)
    assert data["nodes"][0]["redis"] == "memory" and data["nodes"][0]["reachable"] is None


def test_the_embedded_topics_pages_read_the_in_process_topic_server(admin_client, settings,
                                                                     layers):
    layer = _use_layer(settings)
    layers.append(layer)
    _publish_and_wait(admin_client, layer, "topics.foyer")
    listing = admin_client.get("/admin/dps/topics/json", {"q": "foy"}).json()
    assert [(r["topic"], r["owner"], r["members"], r["messages"]) for r in listing["rows"]] == [
        ("topics:foyer", "local-ts", {"local": 1}, 3)]
    detail = admin_client.get("/admin/dps/topics/topics:foyer/json").json()
    assert detail["lookup"]["owner"] == "local-ts" and detail["row"]["messages"] == 3
    html = admin_client.get("/admin/dps/topics/", {"o": "-last"}).content.decode()
    assert "topics:foyer" in html and 'class="sortable column-last sorted ascending"' in html


def test_site_topics_are_shown_and_addressed_by_their_topic_names():
    from channel_layer.ring import Ring
    from topics.operator.cluster_stats import owner_lookup, topic_of

    assert topic_of("rooms.coffee") == "rooms:coffee"
    assert topic_of("topics.matrix") == "topics:matrix"
    assert topic_of("dps.identity.42") == "dps.identity.42"
    found = owner_lookup(Ring(["ts-a", "ts-b"]), "rooms:coffee")
    assert found["error"] is None and found["group"] == "rooms.coffee"


def test_the_projects_admin_index_is_its_own_and_lists_the_dps_pages(admin_client):
    from django.contrib import admin

    assert admin.site.index_template is None
    html = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/dps/cluster/"' in html and 'href="/admin/dps/topics/"' in html
    assert admin_client.get("/admin/dps/").status_code == 200  # the app's own index
    page = admin_client.get("/admin/dps/topics/rooms:coffee/")
    assert page.status_code == 200 and "not a topic" not in page.content.decode()
