"""The publish rate limit per identity (topics.hooks.limits) and the identity's group name
(topics.hooks.identity): the pure rules, then the same through the ASGI app in process."""
from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from dps_site.asgi import application
from tests.support.markers import assert_marker_is_next
from topics import api
from topics.hooks import limits
from topics.hooks.identity import ANONYMOUS_IDENTITY, IDENTITY_GROUP_PREFIX, Identity

OK = {"status": "ok", "response": {}}
LIMITED = {"status": "error", "response": {"reason": limits.RATE_LIMITED}}
PATH = "/socket/websocket?vsn=2.0.0"


# --- the identity's group --------------------------------------------------------------------


@pytest.mark.parametrize("first, second", [
    ("a@b", "a_b"),  # the same once made a valid group name
    ("x" * 80 + "1", "x" * 80 + "2"),  # the same in their first 80 characters
    ("Ünïcode", "_n_code"),
])
def test_distinct_ids_have_distinct_groups(first, second):
    assert Identity(first).group != Identity(second).group


@pytest.mark.parametrize("user_id", ["42", "a@b", "x" * 500, "名前", "\ud800"])
def test_an_identity_group_is_a_stable_valid_channels_group_name(user_id):
    from channels.layers import BaseChannelLayer

    group = Identity(user_id).group
    assert group == Identity(user_id).group and group.startswith(IDENTITY_GROUP_PREFIX)
    assert BaseChannelLayer().require_valid_group_name(group)
    assert ANONYMOUS_IDENTITY.group is None


# --- the buckets ----------------------------------------------------------------------------


def test_an_identitys_buckets_survive_and_refilled_ones_are_dropped():
    buckets = limits.IdentityBuckets(rate=1.0, burst=2)
    assert [buckets.take("user:1", 0.0) for _ in range(3)] == [True, True, False]
    assert buckets.take("user:2", 0.0)  # another identity has its own
    assert not buckets.take("user:1", 0.5)  # half a token refilled: still none
    assert buckets.take("user:1", 1.5)
    buckets.sweep(2.0)  # user:2 has refilled, user:1 (1 token at 2.0 of 2) has not
    assert len(buckets) == 1
    buckets.sweep(10.0)
    assert len(buckets) == 0
    # Dropped only once full: the same as a new bucket.
    assert [buckets.take("user:1", 10.0) for _ in range(3)] == [True, True, False]


def test_new_buckets_sweep_at_most_once_per_refill_time():
    buckets = limits.IdentityBuckets(rate=10.0, burst=10)  # 1 s to refill
    for n in range(100):
        buckets.take(f"user:{n}", 0.0)
    buckets.take("user:late", 0.9)  # nothing has refilled yet, and no sweep is due
    assert len(buckets) == 101
    buckets.take("user:later", 1.5)  # a sweep is due: the 101 have refilled
    assert len(buckets) == 1


def test_the_gate_is_per_identity_and_per_socket_for_anonymous(settings):
    settings.DPS_PUBLISH_RATE = 0.001
    settings.DPS_PUBLISH_BURST = 1
    first, again = (limits.publish_gate(Identity("7"), 0.0) for _ in range(2))
    assert first(0.0) and not again(0.0)  # one bucket for both sockets of user 7
    anonymous = [limits.publish_gate(ANONYMOUS_IDENTITY, 0.0) for _ in range(2)]
    assert all(gate(0.0) for gate in anonymous)
    settings.DPS_PUBLISH_RATE = 0
    assert limits.publish_gate(Identity("7"), 0.0) is None


# --- through the consumer -------------------------------------------------------------------


async def connect_as_who(params, scope):
    """The connect hook of these tests: ``?who=ID`` is that identity (async: no database)."""
    return Identity(params["who"]) if "who" in params else None


@pytest.fixture(autouse=True)
def dps_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channel_layer.DPSChannelLayer"}}
    settings.DPS_CONNECT = f"{__name__}.connect_as_who"
    settings.DPS_PRESENCE = []
    yield
    layer = channel_layers.backends.get("default")
    if layer is not None:
        async_to_sync(layer.close)()


async def connect(who: str) -> WebsocketCommunicator:
    client = WebsocketCommunicator(application, f"{PATH}&who={who}")
    connected, _ = await client.connect()
    assert connected
    await send(client, "1", "1", "topics:matrix", "phx_join", {})
    assert await receive(client) == ["1", "1", "topics:matrix", "phx_reply", OK]
    return client


async def send(client, *frame) -> None:
    await client.send_to(text_data=json.dumps(list(frame)))


async def receive(client) -> list:
    return json.loads(await client.receive_from(timeout=5))


async def publish(client, ref: str) -> dict:
    """The reply to one publish (the publisher's own copy, when it went out, is read too)."""
    await send(client, "1", ref, "topics:matrix", "publish", ["e", {}])
    reply = await receive(client)
    if reply[4] == OK:
        assert (await receive(client))[3] == "e"
    return reply[4]


async def test_a_reconnect_does_not_refill_the_identitys_bucket(settings):
    settings.DPS_PUBLISH_RATE = 0.001  # no refill within the test
    settings.DPS_PUBLISH_BURST = 2
    client = await connect("ada")
    assert [await publish(client, ref) for ref in "23"] == [OK, OK]
    assert await publish(client, "4") == LIMITED
    await client.disconnect()
    client = await connect("ada")
    assert await publish(client, "5") == LIMITED
    other = await connect("bob")  # another identity's bucket is its own
    assert await publish(other, "2") == OK
    for each in (client, other):
        await each.disconnect()


async def test_distinct_ids_are_disconnected_apart(settings):
    # a@b and a_b once shared a disconnect group: disconnecting one closed both.
    target, bystander = await connect("a@b"), await connect("a_b")
    await api.adisconnect(Identity("a@b"))
    assert (await target.receive_output(timeout=5))["type"] == "websocket.close"
    # Had the bystander shared the group, its close was delivered with the target's, so before
    # this marker: the marker is its next frame only if no close came.
    await assert_marker_is_next(receive, "topics:matrix", (bystander, "1"))
    await send(bystander, None, "2", "phoenix", "heartbeat", {})
    assert await receive(bystander) == [None, "2", "phoenix", "phx_reply", OK]
    for client in (target, bystander):
        await client.disconnect()
