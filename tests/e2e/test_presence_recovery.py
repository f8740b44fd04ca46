"""Presence and recovery end to end: phoenix.js clients (``tests/interop/driver.mjs``, the
official ``Socket``, ``Channel`` and ``Presence``) on a real cluster of 2 WS nodes under daphne
and 2 topic servers, each with its own redis-server.

One cluster serves the module; the test that SIGKILLs a WS node runs last.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from channel_layer.cluster import load_cluster
from channel_layer.layer import DPSChannelLayer
from channel_layer.ring import Ring
from tests.support.phoenix_driver import DriverError, PhoenixDriver
from tests.support.waiting import seconds_until
from topics.devtools.embedded_redis import free_port_block
from topics.devtools.local_cluster import LocalCluster
from topics.protocol.topic_names import group_for_topic

pytestmark = pytest.mark.e2e

NODE_TIMEOUT = 3.0
HISTORY_SIZE = 60
LAYER = {"node_timeout": NODE_TIMEOUT, "startup_sync_timeout": 3,
         "history": {"rooms.*": {"size": HISTORY_SIZE, "ttl": 300}}}





@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    log: list[str] = []
    base = {**os.environ, "DPS_LAYER": json.dumps(LAYER)}
    with LocalCluster(ws=2, ts=2, port=free_port_block(2), base_env=base, migrate=False,
                      emit=log.append) as running:
        yield running


@pytest.fixture(scope="module")
def js() -> Iterator[PhoenixDriver]:
    with PhoenixDriver() as driver:
        yield driver


@pytest.fixture(scope="module")
def owner_layer(cluster: LocalCluster) -> Iterator[DPSChannelLayer]:
    """A node-less layer in this process: what ``topics.api`` asks the owners through."""
    layer = DPSChannelLayer(cluster=load_cluster(env={"DPS_CLUSTER": str(cluster.cluster_file)}))
    yield layer
    asyncio.run(layer.close())


def retrying(action: Callable[[], object], what: str, timeout: float = 15.0) -> object:
    """``action()``'s result once it stops raising DriverError (an error reply)."""
    outcome: list[object] = []

    def attempt() -> bool:
        try:
            outcome.append(action())
            return True
        except DriverError:
            return False
    seconds_until(attempt, timeout, what, interval=0.5)
    return outcome[0]


def endpoint(cluster: LocalCluster, index: int) -> str:
    return f"ws://127.0.0.1:{cluster.ws_nodes[index].port}/socket"


def owner_of(topic: str, cluster: LocalCluster) -> str:
    return Ring(n.name for n in cluster.nodes if n.role == "ts").owner_of(group_for_topic(topic))


def payloads(js: PhoenixDriver, client: str, topic: str) -> list[int]:
    return [body["n"] for _ref, body in js.received(client, topic)]


def test_presence_joins_and_leaves_reach_both_nodes_within_a_second(cluster, js):
    topic = "rooms:presence1"
    js.connect("p1a", url=endpoint(cluster, 0))
    js.connect("p1b", url=endpoint(cluster, 1))
    js.join("p1a", topic, payload={"name": "Ada"})
    js.join("p1b", topic, payload={"name": "Bob"})
    seen = seconds_until(lambda: len(js.presence("p1a", topic)) == 2 ==
                      len(js.presence("p1b", topic)), 1.0, "both see both")
    assert js.presence("p1a", topic) == js.presence("p1b", topic)
    js.leave("p1b", topic)
    left = seconds_until(lambda: len(js.presence("p1a", topic)) == 1, 1.0, "the leave is seen")
    print(f"join seen on both nodes after {seen:.3f}s, leave after {left:.3f}s")


def test_state_is_identical_on_both_nodes_after_200_random_joins_and_leaves(
        cluster, js, owner_layer):
    topic = "rooms:presence2"
    for i in (0, 1):
        js.connect(f"obs{i}", url=endpoint(cluster, i))
        js.join(f"obs{i}", topic)
    clients = [f"c2_{i}" for i in range(12)]
    for i, name in enumerate(clients):
        js.connect(name, url=endpoint(cluster, i % 2))
    joined: set[str] = set()
    chooser = random.Random(12)
    for _ in range(200):
        name = chooser.choice(clients)
        if name in joined:
            js.leave(name, topic)
            joined.discard(name)
        else:
            js.join(name, topic, payload={"name": name})
            joined.add(name)
    expected = len(joined) + 2

    def at_owner() -> dict[str, list[str]]:
        state = asyncio.run(owner_layer.group_presence(group_for_topic(topic)))
        return {key: sorted(m["phx_ref"] for m in v["metas"]) for key, v in state.items()}

    owner_state = at_owner()  # every join and leave was answered: the owner has them all
    assert len(owner_state) == expected
    seconds_until(lambda: js.presence("obs0", topic) == owner_state == js.presence("obs1", topic),
               2.0, f"both observers list the owner's {expected} entries")
    assert at_owner() == owner_state


def test_a_reconnecting_client_recovers_exactly_the_50_it_missed_in_order(cluster, js):
    topic = "rooms:recover1"
    js.connect("r1", url=endpoint(cluster, 0))
    js.connect("p1", url=endpoint(cluster, 1))
    first = js.join("r1", topic, payload={"offsets": True})
    assert first["recovered"] is False and first["position"]["offset"] == 0
    js.join("p1", topic)
    js.publish("p1", topic, count=3, start=0)
    seconds_until(lambda: len(js.received("r1", topic)) == 3, 5, "3 live messages")
    js.offline("r1")
    js.publish("p1", topic, count=50, start=3)
    reply = js.online("r1", topic)
    assert reply["recovered"] is True
    assert reply["position"]["offset"] == 53
    seconds_until(lambda: len(js.received("r1", topic)) >= 53, 5, "the 50 missed messages")
    js.publish("p1", topic, count=5, start=53)
    seconds_until(lambda: len(js.received("r1", topic)) >= 58, 5, "the live ones after them")
    assert payloads(js, "r1", topic) == list(range(58))  # in order, no gap, no duplicate
    refs = [ref for ref, _ in js.received("r1", topic)]
    assert [int(ref.split(":")[1]) for ref in refs] == list(range(1, 59))
    assert {ref.split(":")[0] for ref in refs} == {first["position"]["epoch"]}


def test_beyond_history_size_the_reply_says_not_recovered(cluster, js):
    topic = "rooms:recover2"
    js.connect("r2", url=endpoint(cluster, 1))
    js.connect("p2", url=endpoint(cluster, 0))
    js.join("r2", topic, payload={"offsets": True})
    js.join("p2", topic)
    js.publish("p2", topic, count=2)
    seconds_until(lambda: len(js.received("r2", topic)) == 2, 5, "2 live messages")
    js.offline("r2")
    js.publish("p2", topic, count=HISTORY_SIZE + 1, start=2)
    reply = js.online("r2", topic)
    assert reply["recovered"] is False
    assert reply["position"]["offset"] == HISTORY_SIZE + 3
    js.publish("p2", topic, count=1, start=HISTORY_SIZE + 3)
    seconds_until(lambda: len(js.received("r2", topic)) == 3, 5, "the next live message")
    assert payloads(js, "r2", topic) == [0, 1, HISTORY_SIZE + 3]  # nothing of the gap


def test_recovery_and_presence_survive_a_topic_server_restart(cluster, js, owner_layer):
    topic = "rooms:recover3"
    owner = owner_of(topic, cluster)
    js.connect("r3", url=endpoint(cluster, 0))
    js.connect("p3", url=endpoint(cluster, 1))
    js.join("r3", topic, payload={"offsets": True, "name": "r3"})
    js.join("p3", topic, payload={"name": "p3"})
    js.publish("p3", topic, count=5)
    seconds_until(lambda: len(js.received("r3", topic)) == 5, 5, "5 live messages")
    js.offline("r3")
    cluster.kill_node(owner, signal.SIGTERM)
    cluster.start_node(owner)
    # Presence rebuilt from the WS nodes' snapshots, nobody rejoined (r3 is offline).
    group = group_for_topic(topic)
    seconds_until(lambda: len(asyncio.run(owner_layer.group_presence(group))) == 1, 10,
               "the restarted owner knows p3 from the snapshot")
    js.publish("p3", topic, count=10, start=5)
    reply = js.online("r3", topic)
    assert reply["recovered"] is True and reply["position"]["offset"] == 15
    seconds_until(lambda: len(js.received("r3", topic)) >= 15, 5, "the 10 missed messages")
    assert payloads(js, "r3", topic) == list(range(15))
    seconds_until(lambda: len(js.presence("p3", topic)) == 2, 2, "p3 sees r3 back")


def test_the_epoch_changes_after_the_owners_redis_restarts(cluster, js):
    topic = "rooms:epoch1"
    owner = owner_of(topic, cluster)
    js.connect("e0", url=endpoint(cluster, 0))
    js.connect("e1", url=endpoint(cluster, 1))
    js.join("e0", topic)
    before = js.join("e1", topic, payload={"offsets": True})
    js.publish("e0", topic, count=2)
    seconds_until(lambda: len(js.received("e1", topic)) == 2, 5, "2 messages")
    js.offline("e1")  # holds a position in the history that is about to go
    cluster.restart_redis(owner)
    # The first write of each WS node to the new Redis may fail (its connection was to the old
    # one): the client is answered with an error and retries, as phoenix.js would.
    retrying(lambda: js.publish("e0", topic, count=1, start=2), "a publish through it")
    # The owner writes a broadcast's history before it fans the broadcast out, so once e0 has
    # it the owner has found its history gone.
    seconds_until(lambda: len(js.received("e0", topic)) == 3, 10, "the publish is delivered")
    js.connect("e2", url=endpoint(cluster, 1))
    after = retrying(lambda: js.join("e2", topic, payload={"offsets": True}), "a join")
    assert after["position"]["epoch"] != before["position"]["epoch"]
    assert after["position"]["offset"] == 3  # offsets go on; the epoch says "a new history"
    assert js.online("e1", topic)["recovered"] is False


def test_phoenix_js_pushes_an_event_the_rooms_handler_broadcasts_to_both_nodes(cluster, js):
    # Phoenix's idiom: channel.push("new_msg", {...}), handle_in broadcasts it (dps_site.chat).
    topic = "rooms:idiom1"
    js.connect("i0", url=endpoint(cluster, 0))
    js.connect("i1", url=endpoint(cluster, 1))
    for client in ("i0", "i1"):
        js.join(client, topic)
        js.listen(client, topic, event="new_msg")
    assert js.push("i0", topic, event="new_msg", payload={"name": "Ada", "text": " hi "}) == {}
    said = [{"name": "Ada", "text": "hi"}]
    seconds_until(lambda: js.heard("i0", topic, event="new_msg") == said
               and js.heard("i1", topic, event="new_msg") == said, 5, "both nodes' members")
    # topics:* keeps the seed's convention: only publish with [event, payload] broadcasts.
    js.join("i0", "topics:idiom1")
    with pytest.raises(DriverError, match="unknown event"):
        js.push("i0", "topics:idiom1", event="new_msg", payload={"text": "hi"})


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_the_demo_page_in_two_browsers_on_two_nodes(cluster, tmp_path):
    """Chat both ways, both users listed, one goes offline, misses 3 messages, reconnects and
    shows them as recovered (screenshots: ``DPS_SCREENSHOT_DIR``, else a temp dir)."""
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("DPS_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = {}
        for index, name in enumerate(("Ada", "Bob")):
            page = browser.new_context(viewport={"width": 1000, "height": 700}).new_page()
            page.goto(f"http://127.0.0.1:{cluster.ws_nodes[index].port}/?room=demo&name={name}")
            expect(page.locator("#connection")).to_have_attribute("data-state", "open")
            pages[name] = page
        ada, bob = pages["Ada"], pages["Bob"]
        for page in (ada, bob):
            expect(page.locator("#presence li")).to_have_text(["Ada", "Bob"], timeout=5000)
        ada.fill("#text", "hello from ws-a")
        ada.press("#text", "Enter")
        expect(bob.locator("#messages li").last).to_have_text("Ada hello from ws-a")
        bob.fill("#text", "hello from ws-b")
        bob.press("#text", "Enter")
        expect(ada.locator("#messages li").last).to_have_text("Bob hello from ws-b")
        ada.screenshot(path=str(shots / "demo-chat.png"), full_page=True)

        ada.click("#offline")
        expect(ada.locator("#connection")).to_have_attribute("data-state", "closed")
        expect(bob.locator("#presence li")).to_have_text(["Bob"], timeout=5000)
        for i in range(3):
            bob.fill("#text", f"missed {i}")
            bob.press("#text", "Enter")
            expect(bob.locator("#messages li").last).to_have_text(f"Bob missed {i}")
        ada.click("#online")
        expect(ada.locator("#recovery")).to_have_text("recovered 3 messages", timeout=10000)
        expect(ada.locator("#messages li.recovered")).to_have_text(
            ["Bob missed 0", "Bob missed 1", "Bob missed 2"])
        expect(ada.locator("#messages li")).to_have_count(5)  # nothing twice
        expect(bob.locator("#presence li")).to_have_text(["Ada", "Bob"], timeout=5000)
        ada.screenshot(path=str(shots / "demo-recovered.png"), full_page=True)
        bob.screenshot(path=str(shots / "demo-other-node.png"), full_page=True)
        browser.close()


def test_the_demo_page_shows_one_line_per_name_history_on_join_and_fits_a_phone(
        cluster, tmp_path):
    """Two tabs with one name are one line with a count; a new joiner sees the room's recent
    messages; at 390 px "Here now" is on screen; the page has an icon; the room field takes
    every name a site topic may have."""
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("DPS_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    first, second = (f"http://127.0.0.1:{n.port}" for n in cluster.ws_nodes)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tabs = [browser.new_context().new_page() for _ in range(2)]
        for tab in tabs:
            tab.goto(f"{first}/?room=details&name=Ada")
            expect(tab.locator("#connection")).to_have_attribute("data-state", "open")
        expect(tabs[0].locator("#presence li")).to_have_text(["Ada (2 tabs)"], timeout=5000)
        for i in range(3):
            tabs[0].fill("#text", f"earlier {i}")
            tabs[0].press("#text", "Enter")
            expect(tabs[1].locator("#messages li").last).to_have_text(f"Ada earlier {i}")

        phone = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
        phone.goto(f"{second}/?room=details&name=Cy")
        expect(phone.locator("#messages li.earlier")).to_have_text(
            ["Ada earlier 0", "Ada earlier 1", "Ada earlier 2"], timeout=5000)
        expect(phone.locator("#presence li")).to_have_text(["Ada (2 tabs)", "Cy"], timeout=5000)
        box = phone.locator("aside h2").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        phone.screenshot(path=str(shots / "demo-phone.png"), full_page=True)

        icon = phone.eval_on_selector("link[rel=icon]", "e => e.href")
        assert phone.request.get(icon).status == 200
        valid = phone.eval_on_selector("#room", """e => ["a_b.c-d", "x", "x y"].map(
            (v) => { e.value = v; return e.checkValidity(); })""")
        assert valid == [True, True, False]
        browser.close()


def test_a_killed_ws_nodes_entries_vanish_within_node_timeout(cluster, js):
    topic = "rooms:killed1"
    js.connect("k_obs", url=endpoint(cluster, 0))
    js.connect("k_gone", url=endpoint(cluster, 1))
    js.join("k_obs", topic)
    js.join("k_gone", topic)
    seconds_until(lambda: len(js.presence("k_obs", topic)) == 2, 2, "both present")
    cluster.kill_node("ws-b", signal.SIGKILL)
    vanished = seconds_until(lambda: len(js.presence("k_obs", topic)) == 1,
                          NODE_TIMEOUT + 2, "the dead node's entry leaves")
    print(f"the SIGKILLed node's entry left after {vanished:.2f}s (node_timeout {NODE_TIMEOUT}s)")
