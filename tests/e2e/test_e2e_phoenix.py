"""End to end: Phoenix clients over real WebSockets against a real local cluster.

One cluster for the whole module: two WS nodes under daphne (ports P and P+1) and two TS nodes,
each node with its own redis-server (``topics.devtools.local_cluster.LocalCluster``). The close-code
tests also run against the same cluster under uvicorn, and the idle-timeout test starts a small
cluster of its own with a short ``DPS_IDLE_TIMEOUT``. Every test uses fresh topic names, so tests
do not see each other's messages.

"Exactly once" is checked without blind waits where the protocol allows it: a topic has one
order, so after a message the publisher sends a marker, and a member that reads up to the marker
has seen every copy of the message that was going to be delivered before it.
"""
from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from websockets.exceptions import InvalidStatus

from tests.support.e2e_cluster import (
    MAX_FRAME_BYTES,
    RING,
    TS_NODES,
    E2ECluster,
    fresh_topic,
    group_of,
    run_cluster,
)
from tests.support.metrics import node_metrics
from tests.support.phoenix_client import PhoenixClient
from topics.adapters import registry
from topics.protocol import v2_binary

pytestmark = pytest.mark.e2e

INVALID_NAME = ("invalid topic name, must be between 2 and 64 characters long "
                "and only contain alphanumeric characters")
OK = {"status": "ok", "response": {}}
UNMATCHED = {"status": "error", "response": {"reason": "unmatched topic"}}
IDLE_TIMEOUT = 1.5  # DPS_IDLE_TIMEOUT of the idle-timeout test's own cluster


def reply(join_ref: object, ref: object, topic: str, payload: dict) -> list:
    return [join_ref, ref, topic, "phx_reply", payload]


def error(reason: str) -> dict:
    return {"status": "error", "response": {"reason": reason}}


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    """The cluster every test uses: WS nodes under daphne, as in production."""
    yield from run_cluster(tmp_path_factory)


@pytest.fixture(scope="module")
def uvicorn_e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    """The same cluster with its WS nodes under uvicorn (for the tests run under both servers)."""
    yield from run_cluster(tmp_path_factory, server="uvicorn")


def patches_off_env(server: str) -> dict[str, str]:
    """Every server patch switched off, but daphne's ``close_codes``: daphne's public path
    cannot send 1003, 1007 or 1009 at all (autobahn refuses them: docs/adapters.md)."""
    off = registry.NAMES - ({"close_codes"} if server == "daphne" else set())
    return {"DPS_SERVER_PATCHES_OFF": ",".join(sorted(off))}


@pytest.fixture(scope="module")
def daphne_patches_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    yield from run_cluster(tmp_path_factory, **patches_off_env("daphne"))


@pytest.fixture(scope="module")
def uvicorn_patches_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    yield from run_cluster(tmp_path_factory, server="uvicorn", **patches_off_env("uvicorn"))


CLUSTERS = {"daphne": "e2e", "uvicorn": "uvicorn_e2e", "daphne, patches off": "daphne_patches_off",
            "uvicorn, patches off": "uvicorn_patches_off"}
PATCHES_OFF = ["daphne, patches off", "uvicorn, patches off"]
# A representative subset also runs with the server patches off: correctness never depends
# on them (topics.adapters), only speed does.
ALSO_WITH_PATCHES_OFF = pytest.mark.parametrize("cluster", ["daphne", *PATCHES_OFF],
                                                indirect=True)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[E2ECluster]:
    e2e: E2ECluster = request.getfixturevalue(CLUSTERS[getattr(request, "param", "daphne")])
    e2e.check_running()
    yield e2e
    e2e.check_running()


@asynccontextmanager
async def clients(e2e: E2ECluster, *nodes: int, vsn: str = "2.0.0") -> AsyncIterator[list]:
    """One connected client per entry of ``nodes``; all closed afterwards."""
    made = await asyncio.gather(*(e2e.client(node, vsn) for node in nodes))
    try:
        yield list(made)
    finally:
        await asyncio.gather(*(c.close() for c in made), return_exceptions=True)


async def publish_and_mark(client: PhoenixClient, topic: str, event: str, payload: dict) -> None:
    """Publish a message and then the ``end`` marker, both acknowledged."""
    assert (await client.publish(topic, event, payload)).status == "ok"
    assert (await client.publish(topic, "end", {})).status == "ok"


async def assert_exactly_once(member: PhoenixClient, topic: str, event: str, payload: dict) -> None:
    """Up to the marker, ``member`` got the message once, with its own join_ref."""
    frames = await member.pushes_until(topic, "end")
    jr = member.join_refs[topic]
    assert [f.as_list() for f in frames] == [[jr, None, topic, event, payload],
                                             [jr, None, topic, "end", {}]]


# --- 1. the original's five tests -------------------------------------------------------------


async def test_join_registers_exactly_one_subscriber(cluster: E2ECluster) -> None:
    async with clients(cluster, 0, 1) as (member, publisher):
        topic = fresh_topic()
        join = await member.join(topic)
        assert join.as_list() == reply("1", "1", topic, OK)
        await publisher.join_ok(topic)
        await publish_and_mark(publisher, topic, "event", {"message": "hi"})
        await assert_exactly_once(member, topic, "event", {"message": "hi"})


@ALSO_WITH_PATCHES_OFF
async def test_a_publish_is_received_exactly_once(cluster: E2ECluster) -> None:
    async with clients(cluster, 1) as (client,):
        topic = fresh_topic()
        jr = await client.join_ok(topic)
        ref = await client.publish(topic, "event", {"message": "hi"}, wait=False)
        assert (await client.recv_frame()).as_list() == reply(jr, ref, topic, OK)
        await client.publish(topic, "end", {})
        await assert_exactly_once(client, topic, "event", {"message": "hi"})


async def test_two_subscribers_each_receive_exactly_once_with_their_own_join_ref(
    cluster: E2ECluster,
) -> None:
    async with clients(cluster, 0, 1) as (first, second):
        topic = fresh_topic()
        await first.join_ok(topic, join_ref="11")
        await second.join_ok(topic, join_ref="22")
        await publish_and_mark(first, topic, "event", {"message": "hi"})
        for member, jr in ((first, "11"), (second, "22")):
            frames = await member.pushes_until(topic, "end")
            assert [f.as_list() for f in frames] == [[jr, None, topic, "event", {"message": "hi"}],
                                                     [jr, None, topic, "end", {}]]


@ALSO_WITH_PATCHES_OFF
async def test_leaving_removes_the_subscriber(cluster: E2ECluster) -> None:
    # ``leaver`` and ``witness`` share node 1; the publisher is on node 0.
    async with clients(cluster, 1, 1, 0) as (leaver, witness, publisher):
        topic = fresh_topic()
        jr = await leaver.join_ok(topic)
        await witness.join_ok(topic)
        await publisher.join_ok(topic)
        ref = await leaver.push(topic, "phx_leave", {})
        assert (await leaver.recv_frame()).as_list() == reply(jr, ref, topic, OK)
        assert (await leaver.recv_frame()).as_list() == [jr, jr, topic, "phx_close", {}]
        await publish_and_mark(publisher, topic, "event", {"message": "hi"})
        await assert_exactly_once(witness, topic, "event", {"message": "hi"})
        # The witness on the same node has its copies: the leaver would have had them by now.
        await leaver.expect_nothing(within=0.3)


async def test_leaving_the_last_member_of_a_node_stops_delivery_there(cluster: E2ECluster) -> None:
    async with clients(cluster, 1, 0) as (leaver, publisher):
        topic = fresh_topic()
        await leaver.join_ok(topic)
        await publisher.join_ok(topic)
        assert (await leaver.leave(topic)).status == "ok"
        await leaver.wait_for(lambda f: f.event == "phx_close")
        await publish_and_mark(publisher, topic, "event", {"message": "hi"})
        await assert_exactly_once(publisher, topic, "event", {"message": "hi"})
        await leaver.expect_nothing(within=0.3)


@pytest.mark.parametrize("topic", ["topics:s", "topics:" + "a" * 65, "topics:matrix%$#"],
                         ids=["too-short", "too-long", "not-alphanumeric"])
async def test_invalid_topic_names_are_refused(cluster: E2ECluster, topic: str) -> None:
    async with clients(cluster, 0) as (client,):
        join = await client.join(topic)
        assert join.as_list() == reply("1", "1", topic, {"status": "error", "response": INVALID_NAME})
        # Not joined: a publish there is an unmatched topic.
        ref = await client.publish(topic, "event", {}, wait=False)
        assert (await client.reply(ref)).as_list() == reply(None, ref, topic, UNMATCHED)


# --- 2. several nodes, both owners ------------------------------------------------------------


def topics_on_each_owner(per_owner: int) -> list[str]:
    topics = [fresh_topic(owner) for owner in TS_NODES for _ in range(per_owner)]
    assert {RING.owner_of(group_of(t)) for t in topics} == set(TS_NODES)
    return topics


@ALSO_WITH_PATCHES_OFF
async def test_every_member_on_both_nodes_gets_every_publish_once_in_one_order(
    cluster: E2ECluster,
) -> None:
    # Four publishers (two per node) and two listeners (one per node), all members of four
    # topics, two owned by each TS node. Every socket receives 4 * 4 * 5 + 8 = 88 pushes in all:
    # fewer than the layer's default per-channel capacity (100). A publishing socket's channel
    # can fill up while its consumer awaits its own group_sends, and the layer then drops
    # broadcasts to it silently; that overload behaviour is not what this test is about.
    per_publisher = 5
    topics = topics_on_each_owner(per_owner=2)
    async with clients(cluster, 0, 1, 0, 1) as publishers, clients(cluster, 0, 1) as listeners:
        members = publishers + listeners
        for member in members:
            for topic in topics:
                await member.join_ok(topic)

        async def publish_all(index: int, publisher: PhoenixClient) -> None:
            refs = []
            for seq in range(per_publisher):  # interleave topics; pipelined, no waiting
                for topic in topics:
                    refs.append(await publisher.publish(
                        topic, "msg", {"from": index, "seq": seq}, wait=False))
            for ref in refs:
                assert (await publisher.reply(ref, timeout=30)).status == "ok"

        # Every publisher publishes on every topic at once, from both nodes.
        await asyncio.gather(*(publish_all(i, p) for i, p in enumerate(publishers)))
        for topic in topics:
            await publish_and_mark(publishers[0], topic, "msg", {"from": "last", "seq": 0})

        expected = {(i, seq) for i in range(len(publishers)) for seq in range(per_publisher)}
        sequences: dict[str, list[list[tuple]]] = {topic: [] for topic in topics}
        for member in members:
            for topic in topics:
                frames = await member.pushes_until(topic, "end", timeout=30)
                assert {f.join_ref for f in frames} == {member.join_refs[topic]}
                assert frames[-2].payload == {"from": "last", "seq": 0}
                received = [(f.payload["from"], f.payload["seq"]) for f in frames[:-2]]
                assert len(received) == len(expected)          # nothing duplicated ...
                assert set(received) == expected               # ... nothing lost
                for i in range(len(publishers)):               # each publisher's order kept
                    assert [s for p, s in received if p == i] == list(range(per_publisher))
                sequences[topic].append(received)
        for topic, seen in sequences.items():
            assert all(s == seen[0] for s in seen), f"members saw different orders on {topic}"


async def test_a_publish_after_the_join_reply_reaches_the_joiner_on_the_other_node(
    cluster: E2ECluster,
) -> None:
    async with clients(cluster, 0, 1) as pair:
        for attempt in range(20):
            owner = TS_NODES[attempt % 2]
            publisher, joiner = pair if attempt % 4 < 2 else pair[::-1]
            topic = fresh_topic(owner)
            await publisher.join_ok(topic)
            jr = await joiner.join_ok(topic)
            # No pause: the publish starts the moment the joiner saw its reply.
            await publisher.publish(topic, "hello", {"attempt": attempt}, wait=False)
            [push] = await joiner.pushes(topic, 1)
            assert push.as_list() == [jr, None, topic, "hello", {"attempt": attempt}], owner


# --- 3. the publisher's reply and its own copy ------------------------------------------------


@ALSO_WITH_PATCHES_OFF
async def test_the_publishers_reply_precedes_its_own_copy(cluster: E2ECluster) -> None:
    async with clients(cluster, 0, 1) as pair:
        for attempt in range(8):
            publisher, other = pair if attempt % 2 else pair[::-1]
            topic = fresh_topic(TS_NODES[attempt // 2 % 2])
            jr = await publisher.join_ok(topic, join_ref=f"j{attempt}")
            await other.join_ok(topic)
            ref = await publisher.publish(topic, "event", {"n": attempt}, wait=False)
            first, second = await publisher.recv_frame(), await publisher.recv_frame()
            assert first.as_list() == reply(jr, ref, topic, OK)
            assert second.as_list() == [jr, None, topic, "event", {"n": attempt}]
            await other.pushes(topic, 1)


# --- 4. bad frames, over the real socket ------------------------------------------------------


@asynccontextmanager
async def bystander(e2e: E2ECluster, node: int = 0) -> AsyncIterator[None]:
    """A well-behaved member on ``node`` that must keep receiving after the block."""
    async with clients(e2e, node, 1 - node) as (member, publisher):
        topic = fresh_topic()
        await member.join_ok(topic)
        await publisher.join_ok(topic)
        yield
        await publish_and_mark(publisher, topic, "after", {"ok": True})
        await assert_exactly_once(member, topic, "after", {"ok": True})


@pytest.mark.parametrize(
    ("publish_payload", "reason_part"),
    [
        ("not an array", "2-element array"),
        (["only-event"], "2-element array"),
        (["event", {}, "extra"], "2-element array"),
        ({"event": "e", "payload": {}}, "2-element array"),
        ([42, {}], "event must be"),
        (["", {}], "event must be"),
        (["event", "a string"], "payload must be a JSON object"),
        (["event", [1, 2]], "payload must be a JSON object"),
        (["event", None], "payload must be a JSON object"),
        (["phx_reply", {}], "reserved"),
        (["phx_join", {}], "reserved"),
    ],
    ids=["string", "one-element", "three-elements", "object", "event-int", "event-empty",
         "payload-string", "payload-array", "payload-null", "reserved-reply", "reserved-join"],
)
@ALSO_WITH_PATCHES_OFF
async def test_a_bad_publish_gets_an_error_reply_and_keeps_the_join(
    cluster: E2ECluster, publish_payload: object, reason_part: str,
) -> None:
    async with bystander(cluster), clients(cluster, 0) as (client,):
        topic = fresh_topic()
        jr = await client.join_ok(topic)
        answer = await client.publish_raw(topic, publish_payload)
        assert answer.join_ref == jr and answer.topic == topic and answer.status == "error"
        assert reason_part in answer.response["reason"]
        await publish_and_mark(client, topic, "good", {"still": "joined"})
        await assert_exactly_once(client, topic, "good", {"still": "joined"})


async def test_unknown_event_on_a_joined_topic_gets_an_error_reply(cluster: E2ECluster) -> None:
    async with bystander(cluster), clients(cluster, 0) as (client,):
        topic = fresh_topic()
        jr = await client.join_ok(topic)
        ref = await client.push(topic, "shout", {"x": 1})
        assert (await client.reply(ref)).as_list() == reply(jr, ref, topic, error("unknown event"))
        await publish_and_mark(client, topic, "good", {})
        await assert_exactly_once(client, topic, "good", {})


async def test_an_event_on_a_topic_not_joined_is_an_unmatched_topic(cluster: E2ECluster) -> None:
    async with bystander(cluster), clients(cluster, 0) as (client,):
        topic = fresh_topic()
        for event, payload in (("publish", ["event", {}]), ("shout", {})):
            ref = await client.push(topic, event, payload, join_ref="9")
            assert (await client.reply(ref)).as_list() == reply(None, ref, topic, UNMATCHED)


async def test_a_join_outside_topics_is_an_unmatched_topic(cluster: E2ECluster) -> None:
    async with bystander(cluster), clients(cluster, 0) as (client,):
        answer = await client.join("room:x")
        assert answer.as_list() == reply(None, "1", "room:x", UNMATCHED)


# Both servers send the specified close codes: daphne's autobahn only after
# topics.adapters.daphne_close_codes lifts its 1000/3000-4999 restriction, and only frames somewhat over
# DPS_MAX_FRAME_BYTES get past the server to be answered by the socket (cluster_runner).
@pytest.fixture(params=["daphne", "uvicorn", *PATCHES_OFF])
def closing_cluster(request: pytest.FixtureRequest) -> Iterator[E2ECluster]:
    e2e: E2ECluster = request.getfixturevalue(CLUSTERS[request.param])
    e2e.check_running()
    yield e2e
    e2e.check_running()


def test_ws_nodes_run_the_layer_on_the_servers_own_loop(closing_cluster: E2ECluster) -> None:
    # runtime_loop="auto": under daphne and uvicorn the layer shares the server's loop (no
    # I/O thread, no thread hop per publish or delivery); every WS node has said so.
    for node in ("ws-a", "ws-b"):
        assert any(line.startswith(f"[{node}]") and
                   "layer runtime of " + node + " runs on the server's loop" in line
                   for line in closing_cluster.log), "\n".join(closing_cluster.log[-30:])


@pytest.mark.parametrize("frame", ["not json", "{", '"a string"', "{}", "[]", "[1]"],
                         ids=["text", "truncated", "json-string", "object", "empty-array",
                              "no-ref"])
async def test_a_frame_without_a_readable_ref_closes_with_1003(
    closing_cluster: E2ECluster, frame: str,
) -> None:
    async with bystander(closing_cluster), clients(closing_cluster, 0) as (client,):
        await client.join_ok(fresh_topic())
        await client.send_text(frame)
        code = await client.wait_closed()
    assert code == 1003


async def test_a_wrong_length_array_with_a_ref_gets_an_error_reply(cluster: E2ECluster) -> None:
    async with bystander(cluster), clients(cluster, 0) as (client,):
        await client.send_text(json.dumps(["1", "7", "topics:xx"]))
        answer = await client.reply("7")
        assert answer.join_ref == "1" and answer.topic == "topics:xx"
        assert answer.status == "error" and answer.response["reason"]
        assert (await client.heartbeat()).status == "ok"  # the socket stays open


async def test_binary_invalid_utf8_closes_with_1007(closing_cluster: E2ECluster) -> None:
    async with bystander(closing_cluster), clients(closing_cluster, 0) as (client,):
        await client.send_bytes(b"\xff\xfe\xfd not utf-8")
        code = await client.wait_closed()
    assert code == 1007


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_a_frame_over_the_max_size_closes_with_1009(
    closing_cluster: E2ECluster, kind: str,
) -> None:
    async with bystander(closing_cluster), clients(closing_cluster, 0) as (client,):
        topic = fresh_topic()
        await client.join_ok(topic)
        frame = client.encode(client.join_refs[topic], "2", topic, "publish",
                              ["big", {"data": "x" * MAX_FRAME_BYTES}])
        await (client.send_text(frame) if kind == "text" else client.send_bytes(frame.encode()))
        code = await client.wait_closed()
    assert code == 1009


@ALSO_WITH_PATCHES_OFF
async def test_heartbeat_gets_an_ok_reply_on_phoenix(cluster: E2ECluster) -> None:
    async with clients(cluster, 1) as (client,):
        await client.send_text('[null,"5","phoenix","heartbeat",{}]')
        assert (await client.recv_frame()).as_list() == reply(None, "5", "phoenix", OK)


@ALSO_WITH_PATCHES_OFF
async def test_a_duplicate_join_replies_ok_then_closes_the_old_join(cluster: E2ECluster) -> None:
    async with bystander(cluster), clients(cluster, 0) as (client,):
        topic = fresh_topic()
        old = await client.join_ok(topic, join_ref="1")
        await client.push(topic, "phx_join", {}, join_ref="3", ref="3")
        assert (await client.recv_frame()).as_list() == reply("3", "3", topic, OK)
        assert (await client.recv_frame()).as_list() == [old, old, topic, "phx_close", {}]
        client.join_refs[topic] = "3"
        await publish_and_mark(client, topic, "event", {"n": 1})
        await assert_exactly_once(client, topic, "event", {"n": 1})


async def test_phx_leave_replies_ok_then_closes(cluster: E2ECluster) -> None:
    async with clients(cluster, 0) as (client,):
        topic = fresh_topic()
        jr = await client.join_ok(topic)
        ref = await client.push(topic, "phx_leave", {})
        assert (await client.recv_frame()).as_list() == reply(jr, ref, topic, OK)
        assert (await client.recv_frame()).as_list() == [jr, jr, topic, "phx_close", {}]
        # A leave for a topic not joined (any more) is simply ok.
        ref = await client.push(topic, "phx_leave", {}, join_ref=jr)
        assert (await client.recv_frame()).as_list() == reply(jr, ref, topic, OK)
        await client.expect_nothing(within=0.2)


@pytest.mark.parametrize("vsn", ["3.0.0", "0.9", ""])
async def test_an_unsupported_vsn_is_refused_with_403(cluster: E2ECluster, vsn: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await PhoenixClient.connect(cluster.url(0, vsn))
    assert refused.value.response.status_code == 403


@ALSO_WITH_PATCHES_OFF
async def test_a_v1_client_joins_and_receives_a_publish_from_a_v2_client(
    cluster: E2ECluster,
) -> None:
    async with clients(cluster, 0, vsn="1.0.0") as (v1,), clients(cluster, 1) as (v2,):
        topic = fresh_topic()
        join = await v1.join(topic)
        assert json.loads(join.raw) == {"join_ref": "1", "ref": "1", "topic": topic,
                                        "event": "phx_reply", "payload": OK}
        await v2.join_ok(topic)
        await publish_and_mark(v2, topic, "event", {"message": "hi"})
        frames = await v1.pushes_until(topic, "end")
        assert [json.loads(f.raw) for f in frames] == [
            {"join_ref": "1", "ref": None, "topic": topic, "event": "event",
             "payload": {"message": "hi"}},
            {"join_ref": "1", "ref": None, "topic": topic, "event": "end", "payload": {}},
        ]
        await v2.pushes_until(topic, "end")  # the V2 publisher's own copies
        # And the other way round: a V1 publish reaches the V2 member.
        answer = await v1.publish(topic, "back", {"from": "v1"})
        assert json.loads(answer.raw) == {"join_ref": "1", "ref": answer.ref, "topic": topic,
                                          "event": "phx_reply", "payload": OK}
        [push] = await v2.pushes(topic, 1)
        assert push.as_list() == [v2.join_refs[topic], None, topic, "back", {"from": "v1"}]


@pytest.mark.parametrize("v1_node", [0, 1], ids=["same-node", "other-node"])
async def test_a_binary_push_reaches_v1_members_as_base64_and_v2_members_as_binary(
    closing_cluster: E2ECluster, v1_node: int,
) -> None:
    data = bytes(range(256))
    async with clients(closing_cluster, v1_node, vsn="1.0.0") as (v1,), \
            clients(closing_cluster, 0, 1) as (publisher, v2):
        topic = fresh_topic()
        for member in (v1, publisher, v2):
            await member.join_ok(topic)
        ref = await publisher.push_binary(topic, "blob", data)
        assert (await publisher.reply(ref)).status == "ok"
        await publish_and_mark(publisher, topic, "after", {})
        frames = await v1.pushes_until(topic, "end")
        assert [json.loads(f.raw) for f in frames] == [
            {"join_ref": v1.join_refs[topic], "ref": None, "topic": topic, "event": "blob",
             "payload": {"binary": base64.b64encode(data).decode()}},
            {"join_ref": v1.join_refs[topic], "ref": None, "topic": topic, "event": "after",
             "payload": {}},
            {"join_ref": v1.join_refs[topic], "ref": None, "topic": topic, "event": "end",
             "payload": {}},
        ]
        for member in (publisher, v2):
            first, *_ = await member.pushes_until(topic, "end")
            assert (first.raw, first.payload) == (v2_binary.encode_broadcast(topic, "blob", data), data)
    assert not [line for line in closing_cluster.log if "fastlane delivery failed" in line]


async def test_a_v1_envelope_client_that_sends_no_vsn_joins_and_publishes(
    cluster: E2ECluster,
) -> None:
    """A client of the V1 envelope format (the Java/Android clients) sends no ``vsn``; as in
    Phoenix that means 1.0.0. Written here from Phoenix's V1 serializer: a JSON object with
    ``topic``, ``event``, ``payload`` and ``ref``, and no ``join_ref``."""
    from websockets.asyncio.client import connect

    topic = fresh_topic()
    url = f"ws://127.0.0.1:{cluster.ports[0]}/socket/websocket"
    async with connect(url, ping_interval=None) as ws, clients(cluster, 1) as (v2,):

        async def next_object() -> dict:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

        await ws.send(json.dumps({"topic": topic, "event": "phx_join", "payload": {}, "ref": "1"}))
        assert await next_object() == {"topic": topic, "event": "phx_reply", "ref": "1",
                                       "join_ref": None, "payload": OK}
        await v2.join_ok(topic)
        await ws.send(json.dumps({"topic": topic, "event": "publish", "ref": "2",
                                  "payload": ["shout", {"from": "v1"}]}))
        assert await next_object() == {"topic": topic, "event": "phx_reply", "ref": "2",
                                       "join_ref": None, "payload": OK}
        assert await next_object() == {"topic": topic, "event": "shout", "ref": None,
                                       "join_ref": None, "payload": {"from": "v1"}}
        [push] = await v2.pushes(topic, 1)
        assert push.as_list() == [v2.join_refs[topic], None, topic, "shout", {"from": "v1"}]


@pytest.mark.parametrize("vsn", ["2.0.1", "2.0.9-rc.1"])
async def test_a_later_2_0_x_vsn_speaks_v2_as_phoenix_matches_2_0_0(
    cluster: E2ECluster, vsn: str,
) -> None:
    async with clients(cluster, 0, vsn=vsn) as (client,):
        await client.send_text('[null,"5","phoenix","heartbeat",{}]')
        assert (await client.recv_frame()).as_list() == reply(None, "5", "phoenix", OK)


@pytest.mark.parametrize("cluster", PATCHES_OFF, indirect=True)
async def test_with_the_patches_off_the_servers_own_paths_do_the_work(
        cluster: E2ECluster) -> None:
    async with clients(cluster, 0, 0) as (member, publisher):
        topic = fresh_topic()
        await member.join_ok(topic)
        await publisher.join_ok(topic)
        await publish_and_mark(publisher, topic, "event", {"n": 1})
        await assert_exactly_once(member, topic, "event", {"n": 1})
    figures = node_metrics(cluster.cluster.plan.metrics_url(cluster.cluster.ws_nodes[0]))
    assert figures["dps_direct_receive_frames_total"] == 0  # every frame took the server's parser
    assert figures["dps_daphne_scan_ticks_total"] == 0  # daphne's own scans
    assert figures["dps_direct_frame_fallbacks_total"] == 0  # switched off is no fallback
    assert figures["dps_server_patch_fallbacks_total"] == 0


# --- 5. idle timeout ----------------------------------------------------------------------------


@pytest.fixture
def idle_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    """A one-WS, one-TS cluster whose sockets time out after IDLE_TIMEOUT seconds of silence."""
    yield from run_cluster(tmp_path_factory, ws=1, ts=1, DPS_IDLE_TIMEOUT=str(IDLE_TIMEOUT))


async def test_a_silent_socket_is_closed_after_the_idle_timeout(idle_cluster: E2ECluster) -> None:
    async with clients(idle_cluster, 0, 0) as (silent, chatty):
        topic = fresh_topic()
        await chatty.join_ok(topic)
        await silent.join_ok(topic)
        loop = asyncio.get_running_loop()
        silent_since = loop.time()

        async def chat(seconds: float) -> None:
            # What keeps a socket open is the client sending frames, e.g. heartbeats.
            end = loop.time() + seconds
            while loop.time() < end:
                assert (await chatty.heartbeat()).status == "ok"
                await asyncio.sleep(IDLE_TIMEOUT / 4)  # the pace under test

        chatting = asyncio.create_task(chat(IDLE_TIMEOUT * 2.5))
        code = await silent.wait_closed(timeout=IDLE_TIMEOUT * 10)
        silent_for = loop.time() - silent_since
        await chatting
        assert code == 1001  # "going away": every phoenix.js version reconnects after it
        assert silent_for >= IDLE_TIMEOUT * 0.9
        # The chatty socket outlived several timeouts and still works.
        await publish_and_mark(chatty, topic, "event", {"alive": True})
        await assert_exactly_once(chatty, topic, "event", {"alive": True})
