"""Connect authentication, the Origin check, topic handlers and the per-socket limits, through
the ASGI app in process (on DPS's embedded cluster). What the same rules look like across real
processes, with phoenix.js, is tests/e2e/test_sample_site.py."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import ImproperlyConfigured

from dps_site.asgi import application
from tests.support.markers import assert_marker_is_next
from tests.support.waiting import settle_until
from topics import api
from topics.hooks.auth import TOKEN_SALT, issue_token, verify_token
from topics.hooks.handlers import Broadcast, Refuse, Reply, TopicHandler
from topics.hooks.origin import origin_allowed
from topics.transport import connections, ws_counters
from topics.transport import consumer as consumer_module
from topics.transport.log_limits import LineLimiter

# Tokens are checked against their users, read from the database by another thread.
pytestmark = pytest.mark.django_db(transaction=True)
OK = {"status": "ok", "response": {}}
PATH = "/socket/websocket?vsn=2.0.0"
USER = SimpleNamespace(pk=42)


def error(reason: str) -> dict:
    return {"status": "error", "response": {"reason": reason}}


@pytest.fixture(autouse=True)
def users():
    """The users the tests' tokens name (``USER`` is 42)."""
    for pk in (1, 2, 3, 42):
        get_user_model().objects.create_user(f"user{pk}", id=pk)  # no password: no hashing


@pytest.fixture(autouse=True)
def dps_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channel_layer.DPSChannelLayer"}}
    settings.DPS_ALLOW_ANONYMOUS = False
    settings.DPS_PRESENCE = []  # these rooms test handlers; presence has its own tests
    yield
    layer = channel_layers.backends.get("default")
    if layer is not None:
        async_to_sync(layer.close)()


async def connect(query: str = "", headers: list | None = None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, PATH + query, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def refused(query: str = "", headers: list | None = None) -> bool:
    communicator = WebsocketCommunicator(application, PATH + query, headers=headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return not connected


async def send(client, *frame) -> None:
    await client.send_to(text_data=json.dumps(list(frame)))


async def receive(client) -> list:
    return json.loads(await client.receive_from(timeout=5))


def in_thread(function, *args, **kwargs):
    """``function``'s result, run in a thread: the ORM refuses to run on an event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args, **kwargs).result()


def token_query(user=USER, **kwargs) -> str:
    """``&token=`` for the database user with ``user``'s primary key."""
    def issue() -> str:
        return issue_token(get_user_model().objects.get(pk=user.pk), **kwargs)
    return "&token=" + in_thread(issue)


# --- connect -------------------------------------------------------------------------------


def test_a_token_names_its_user_until_it_expires_and_not_once_tampered_with():
    token = issue_token(get_user_model().objects.get(pk=42), ttl=60)
    assert verify_token(token).user_id == "42"
    assert verify_token(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]) is None
    expired = signing.dumps({"u": "42", "exp": time.time() - 1}, salt=TOKEN_SALT)
    assert verify_token(expired) is None
    other_salt = signing.dumps({"u": "42", "exp": time.time() + 60}, salt="something else")
    assert verify_token(other_salt) is None
    with pytest.raises(ValueError):
        issue_token(get_user_model().objects.get(pk=42), ttl=0)


def forged(user_id: str, **claims) -> str:
    """A token made with the node's own key, as someone holding it could."""
    return signing.dumps({"u": user_id, "exp": time.time() + 600, "v": 0, "h": "0" * 32,
                          **claims}, salt=TOKEN_SALT)


def test_a_token_is_refused_once_its_user_is_missing_inactive_or_changed_password():
    model = get_user_model()
    user = model.objects.get(pk=42)
    token = issue_token(user)
    assert verify_token(token) == api.Identity("42")
    assert verify_token(forged("999999")) is None  # no such user
    assert verify_token(forged("not-a-pk")) is None
    legacy = signing.dumps({"u": "42", "exp": time.time() + 600}, salt=TOKEN_SALT)
    assert verify_token(legacy) is None  # no version: signed before tokens carried one
    user.is_active = False
    user.save()
    assert verify_token(token) is None
    with pytest.raises(ValueError, match="inactive"):
        issue_token(user)
    user.is_active = True
    user.save()
    assert verify_token(token) == api.Identity("42")
    user.set_password("a new one")
    user.save()
    assert verify_token(token) is None
    assert verify_token(issue_token(user)) == api.Identity("42")
    model.objects.filter(pk=42).delete()
    assert verify_token(issue_token(user)) is None


def test_revoke_tokens_refuses_every_token_issued_before_and_none_after():
    user = get_user_model().objects.get(pk=42)
    before = [issue_token(user), issue_token(user, ttl=60)]
    other = issue_token(get_user_model().objects.get(pk=2))
    api.revoke_tokens(user)
    assert [verify_token(token) for token in before] == [None, None]
    assert verify_token(other) == api.Identity("2")
    after = issue_token(user)
    assert verify_token(after) == api.Identity("42")
    api.revoke_tokens("42")  # by id too
    assert verify_token(after) is None
    api.revoke_tokens("999999")  # nobody: nothing to do
    with pytest.raises(ValueError):
        api.revoke_tokens(api.Identity())


def test_tokens_signed_with_a_fallback_key_verify_after_a_rotation(settings):
    user = get_user_model().objects.get(pk=42)
    old_key = settings.SECRET_KEY
    token = issue_token(user)
    settings.SECRET_KEY = "a new key " * 6
    assert verify_token(token) is None
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert verify_token(token) == api.Identity("42")
    assert verify_token(issue_token(user)) == api.Identity("42")  # signed with the new key


async def test_disconnect_with_revoke_closes_the_sockets_and_their_token_cannot_reconnect():
    query = token_query()
    client = await connect(query)
    await api.adisconnect(USER, revoke=True)
    assert await client.receive_output(timeout=5) == {"type": "websocket.close", "code": 1001}
    await client.disconnect()
    assert await refused(query)
    await (await connect(token_query())).disconnect()  # a new token works


async def test_anonymous_sockets_are_refused_unless_allowed(settings):
    assert await refused()
    settings.DPS_ALLOW_ANONYMOUS = True
    client = await connect()
    await client.disconnect()


async def test_a_valid_token_is_accepted_and_a_bad_one_refused_even_with_anonymous_on(settings):
    client = await connect(token_query())
    assert connections.open_sockets_by_identity().get("user:42") == 1
    await client.disconnect()
    settings.DPS_ALLOW_ANONYMOUS = True
    assert await refused("&token=not-a-token")
    expired = signing.dumps({"u": "42", "exp": time.time() - 1}, salt=TOKEN_SALT)
    assert await refused("&token=" + expired)
    assert connections.refused_handshakes()["unauthenticated"] >= 2


def auth_token_protocol(token: str, urlsafe: bool = False) -> str:
    """phoenix.js 1.8's ``authToken`` subprotocol: ``btoa(token)`` without its padding (the
    URL-safe alphabet is what the prefix's name promises; DPS reads both)."""
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return "base64url.bearer.phx." + encode(token.encode()).decode().rstrip("=")


async def connect_offering(protocols: list[str]) -> tuple[bool, str | None]:
    communicator = WebsocketCommunicator(application, PATH, subprotocols=protocols)
    connected, subprotocol = await communicator.connect()
    await communicator.disconnect()
    return connected, subprotocol if connected else None


async def test_an_auth_token_subprotocol_connects_and_only_phoenix_is_echoed(settings):
    token = token_query().removeprefix("&token=")
    for urlsafe in (False, True):
        assert await connect_offering(["phoenix", auth_token_protocol(token, urlsafe)]) == (
            True, "phoenix")
    assert await connect_offering([auth_token_protocol(token)]) == (True, None)
    settings.DPS_ALLOW_ANONYMOUS = True  # a bad authToken refuses, never falls back to anonymous
    assert await connect_offering(["phoenix"]) == (True, "phoenix")
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (auth_token_protocol(tampered), "base64url.bearer.phx.!not*base64"):
        assert await connect_offering(["phoenix", bad]) == (False, None)


def hook_returning_a_user(params, scope):
    # A sync hook: it runs off the loop (it may use the ORM).
    assert threading.current_thread() is not threading.main_thread()
    return api.Identity(params["who"]) if "who" in params else None


def hook_that_raises(params, scope):
    raise RuntimeError("boom")


async def test_a_custom_connect_hook_decides(settings, caplog):
    settings.DPS_CONNECT = "tests.unit.test_auth_and_handlers.hook_returning_a_user"
    client = await connect("&who=7")
    assert connections.open_sockets_of("user:7") == 1
    await client.disconnect()
    assert await refused()
    settings.DPS_CONNECT = "tests.unit.test_auth_and_handlers.hook_that_raises"
    with caplog.at_level(logging.ERROR, logger="topics.hooks.auth"):
        assert await refused("&who=7")
    assert sum("connect hook raised" in r.getMessage() for r in caplog.records) == 1


def ws_scope(host: str, scheme: str = "ws", **headers: str) -> dict:
    return {"type": "websocket", "scheme": scheme, "headers": [(b"host", host.encode())] + [
        (name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]}


def test_an_origin_must_match_scheme_host_and_port_of_the_sites_own(settings):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = []  # Django's local defaults: .localhost, 127.0.0.1, [::1]
    settings.DPS_ALLOWED_ORIGINS = []
    node = ws_scope("127.0.0.1:8000")
    assert origin_allowed("http://127.0.0.1:8000", node)
    assert origin_allowed("http://127.0.0.1:8000/", node)
    for foreign in ("http://127.0.0.1:9999", "https://127.0.0.1:8000", "http://evil.localhost",
                    "http://evil.localhost:8000", "http://localhost:8000", "null",
                    "http://user@127.0.0.1:8000", "http://127.0.0.1:8000/path", "ftp://127.0.0.1"):
        assert not origin_allowed(foreign, node), foreign
    # A page of the node itself on a .localhost name: its own origin (the Host it connects to).
    assert origin_allowed("http://app.localhost:8000", ws_scope("app.localhost:8000"))
    # A Host outside ALLOWED_HOSTS has no own origin (DNS rebinding).
    settings.ALLOWED_HOSTS = ["app.example.com", "ws.example.com", ".example.org", "*"]
    # "*" lets any Host be its own origin, and never makes another origin one of the site's.
    assert origin_allowed("http://evil.example:8000", ws_scope("evil.example:8000"))
    assert not origin_allowed("http://other.example:8000", ws_scope("evil.example:8000"))
    settings.ALLOWED_HOSTS = ["app.example.com", "ws.example.com", ".example.org"]
    assert not origin_allowed("http://evil.example:8000", ws_scope("evil.example:8000"))
    # Literal ALLOWED_HOSTS on the handshake's own scheme and port; patterns never.
    tls = ws_scope("ws.example.com", scheme="wss")
    assert origin_allowed("https://app.example.com", tls)
    assert origin_allowed("https://app.example.com:443", tls)
    for foreign in ("http://app.example.com", "https://app.example.com:8443",
                    "https://a.example.org", "https://example.org"):
        assert not origin_allowed(foreign, tls), foreign


def test_behind_a_tls_proxy_the_origin_is_https_when_the_proxy_header_says_so(settings):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    settings.DPS_ALLOWED_ORIGINS = []
    proxied = ws_scope("app.example.com", x_forwarded_proto="https")
    assert not origin_allowed("https://app.example.com", proxied)  # no SECURE_PROXY_SSL_HEADER
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_allowed("https://app.example.com", proxied)
    assert not origin_allowed("http://app.example.com", proxied)


def test_dps_allowed_origins_lists_whole_origins_and_star_only_on_purpose(settings):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    settings.DPS_ALLOWED_ORIGINS = ["https://other.example.org", "http://localhost:3000"]
    scope = ws_scope("app.example.com", scheme="wss")
    assert origin_allowed("https://other.example.org:443", scope)
    assert origin_allowed("http://localhost:3000", scope)
    assert origin_allowed("https://app.example.com", scope)  # its own, always
    assert not origin_allowed("http://localhost:3001", scope)
    assert not origin_allowed("http://other.example.org", scope)
    settings.DPS_ALLOWED_ORIGINS = ["*"]
    assert origin_allowed("http://anything.example", scope)
    settings.DPS_ALLOWED_ORIGINS = ["app.example.com"]  # a host, not an origin
    with pytest.raises(ImproperlyConfigured, match="not an origin"):
        origin_allowed("https://app.example.com", scope)


async def test_a_foreign_origin_is_refused_at_the_handshake_and_no_origin_is_left_to_the_hook(
        settings):
    settings.DPS_ALLOW_ANONYMOUS = True
    settings.ALLOWED_HOSTS = ["app.example.com"]
    settings.DPS_ALLOWED_ORIGINS = []
    host = (b"host", b"app.example.com:8000")
    assert await refused(headers=[host, (b"origin", b"https://evil.example.net")])
    assert await refused(headers=[host, (b"origin", b"http://app.example.com:9999")])
    assert await refused(headers=[host, (b"origin", b"null")])
    await (await connect(headers=[host, (b"origin", b"http://app.example.com:8000")])).disconnect()
    await (await connect()).disconnect()  # no Origin: the connect hook alone decides
    assert connections.refused_handshakes()["origin"] >= 3


# --- handlers ------------------------------------------------------------------------------

calls: list[tuple] = []


class GuardedTopic(TopicHandler):
    """Sync methods (they run off the loop): joins need {"pass": "word"}."""

    def join(self, socket, topic, payload):
        calls.append(("join", socket.identity.user_id, topic))
        if payload.get("pass") == "forbidden":
            raise Refuse("you may not")
        if payload.get("pass") == "crash":
            raise RuntimeError("a bug in the join")
        if payload.get("pass") != "word":
            raise Refuse()
        socket.assigns["joined_at"] = topic
        return {"welcome": topic}

    def handle_in(self, socket, event, payload):
        if event == "shout":
            return Broadcast({"text": payload["text"].upper(), "by": socket.identity.user_id})
        if event == "ping":
            return Reply({"pong": socket.assigns["joined_at"]})
        if event == "boom":
            raise KeyError("a bug in the handler")
        if event == "secret":
            raise Refuse("not here")
        if event == "reserved":
            return Broadcast({}, event="phx_reply")  # not allowed: clients would misread it
        return None

    def leave(self, socket, topic):
        calls.append(("leave", socket.identity.user_id, topic))


class AsyncTopic(TopicHandler):
    async def handle_in(self, socket, event, payload):
        await asyncio.sleep(0)  # one loop turn, no clock
        return Broadcast({**payload, "seen": True}, event="seen")


@pytest.fixture
def handler_routes(settings):
    settings.DPS_TOPICS = {
        "rooms:*": "tests.unit.test_auth_and_handlers.GuardedTopic",
        "async:*": AsyncTopic,
        "topics:*": "topics.hooks.handlers.SeedTopic",
    }
    calls.clear()


async def test_a_handler_refuses_accepts_transforms_and_replies(handler_routes):
    alice, bob = await connect(token_query(SimpleNamespace(pk=1))), await connect(token_query())
    await send(alice, "1", "1", "rooms:lobby", "phx_join", {})
    assert await receive(alice) == ["1", "1", "rooms:lobby", "phx_reply", error("unauthorized")]
    await send(alice, "1", "2", "rooms:lobby", "phx_join", {"pass": "forbidden"})
    assert await receive(alice) == ["1", "2", "rooms:lobby", "phx_reply", error("you may not")]
    await send(alice, "1", "3", "rooms:lobby", "phx_join", {"pass": "word"})
    assert await receive(alice) == ["1", "3", "rooms:lobby", "phx_reply",
                                    {"status": "ok", "response": {"welcome": "rooms:lobby"}}]
    await send(bob, "9", "9", "rooms:lobby", "phx_join", {"pass": "word"})
    assert (await receive(bob))[4]["status"] == "ok"
    assert calls[:3] == [("join", "1", "rooms:lobby")] * 3

    await send(alice, "1", "4", "rooms:lobby", "publish", ["shout", {"text": "hi"}])
    assert await receive(alice) == ["1", "4", "rooms:lobby", "phx_reply", OK]
    expected = {"text": "HI", "by": "1"}
    assert await receive(alice) == ["1", None, "rooms:lobby", "shout", expected]
    assert await receive(bob) == ["9", None, "rooms:lobby", "shout", expected]

    await send(alice, "1", "5", "rooms:lobby", "publish", ["ping", {}])
    assert await receive(alice) == ["1", "5", "rooms:lobby", "phx_reply",
                                    {"status": "ok", "response": {"pong": "rooms:lobby"}}]
    await send(alice, "1", "6", "rooms:lobby", "publish", ["secret", {}])
    assert await receive(alice) == ["1", "6", "rooms:lobby", "phx_reply", error("not here")]
    # bob saw nothing of the refusals: the marker broadcast after them is his next frame
    await assert_marker_is_next(receive, "rooms:lobby", (bob, "9"), (alice, "1"))
    await send(alice, "1", "9", "rooms:lobby", "phx_leave", {})
    assert (await receive(alice))[3] == "phx_reply"
    assert (await receive(alice))[3] == "phx_close"
    await bob.disconnect()
    await alice.disconnect()
    assert ("leave", "1", "rooms:lobby") in calls and ("leave", "42", "rooms:lobby") in calls


async def test_a_crashing_handler_crashes_that_channel_only_as_in_phoenix(
        handler_routes, caplog, monkeypatch):
    """A join that raises is refused with ``join crashed``; a handle_in that raises or returns
    what it may not leaves the topic, with ``phx_error`` and no reply (phoenix.js rejoins);
    each is counted, and one traceback is logged per handler method and interval."""
    monkeypatch.setattr(consumer_module, "_CRASH_LINES", LineLimiter(60))
    crashes = ws_counters.COUNTS.channel_crashes
    alice, bob = await connect(token_query(SimpleNamespace(pk=1))), await connect(token_query())
    await send(bob, "9", "9", "rooms:lobby", "phx_join", {"pass": "word"})
    assert (await receive(bob))[4]["status"] == "ok"
    with caplog.at_level(logging.ERROR, logger="topics.transport.consumer"):
        await send(alice, "1", "1", "rooms:lobby", "phx_join", {"pass": "crash"})
        assert await receive(alice) == ["1", "1", "rooms:lobby", "phx_reply",
                                        error("join crashed")]
        await send(alice, "2", "2", "rooms:lobby", "phx_join", {"pass": "word"})
        assert (await receive(alice))[4]["status"] == "ok"
        await send(alice, "2", "3", "rooms:lobby", "publish", ["boom", {}])
        assert await receive(alice) == ["2", "2", "rooms:lobby", "phx_error",
                                        {"reason": "channel_crash"}]
        assert ("leave", "1", "rooms:lobby") in calls  # the crashed channel's leave ran
        # Left: a publish from the other member does not reach it, a push is not joined.
        await send(bob, "9", "10", "rooms:lobby", "publish", ["say", {"n": 1}])
        assert (await receive(bob))[3:] == ["phx_reply", OK]
        assert (await receive(bob))[3:] == ["say", {"n": 1}]
        await send(alice, "2", "4", "rooms:lobby", "publish", ["say", {}])
        assert await receive(alice) == [None, "4", "rooms:lobby", "phx_reply",
                                        error("unmatched topic")]
        # phoenix.js's rejoin: joined again, and a handler that returns what it may not
        # (a phx_ broadcast) crashes the channel the same way.
        await send(alice, "3", "5", "rooms:lobby", "phx_join", {"pass": "word"})
        assert (await receive(alice))[4]["status"] == "ok"
        await send(alice, "3", "6", "rooms:lobby", "publish", ["reserved", {}])
        assert await receive(alice) == ["3", "3", "rooms:lobby", "phx_error",
                                        {"reason": "channel_crash"}]
    assert ws_counters.COUNTS.channel_crashes == crashes + 3
    lines = [r for r in caplog.records if "crashed on rooms:lobby" in r.getMessage()]
    # join and handle_in once each; the second handle_in crash is held back
    assert [r.getMessage() for r in lines] == ["GuardedTopic.join crashed on rooms:lobby",
                                               "GuardedTopic.handle_in crashed on rooms:lobby"]
    assert "a bug in the join" in str(lines[0].exc_info[1])
    assert "a bug in the handler" in str(lines[1].exc_info[1])
    # The other member saw nothing of it: his own publish's reply and copy are his next frames.
    await send(bob, "9", "11", "rooms:lobby", "publish", ["say", {"n": 2}])
    assert (await receive(bob))[3:] == ["phx_reply", OK]
    assert (await receive(bob))[3:] == ["say", {"n": 2}]
    await bob.disconnect()
    await alice.disconnect()


async def test_async_handlers_unmatched_and_invalid_site_topics(handler_routes, settings):
    client = await connect(token_query())
    await send(client, "1", "1", "async:feed", "phx_join", {})
    assert await receive(client) == ["1", "1", "async:feed", "phx_reply", OK]
    await send(client, "1", "2", "async:feed", "publish", ["x", {"a": 1}])
    assert await receive(client) == ["1", "2", "async:feed", "phx_reply", OK]
    assert await receive(client) == ["1", None, "async:feed", "seen", {"a": 1, "seen": True}]
    await send(client, "1", "3", "other:x", "phx_join", {})
    assert await receive(client) == [None, "3", "other:x", "phx_reply", error("unmatched topic")]
    await send(client, "1", "4", "rooms:bad name!", "phx_join", {"pass": "word"})
    assert await receive(client) == ["1", "4", "rooms:bad name!", "phx_reply",
                                     error("invalid topic name")]
    await client.disconnect()


# --- publishing and control from Django code -------------------------------------------------


async def test_abroadcast_reaches_members_and_adisconnect_closes_only_that_identity(settings):
    settings.DPS_ALLOW_ANONYMOUS = True
    target, other, anonymous = (await connect(token_query()),
                                await connect(token_query(SimpleNamespace(pk=2))), await connect())
    for client in (target, other, anonymous):
        await send(client, "1", "1", "topics:news", "phx_join", {})
        assert await receive(client) == ["1", "1", "topics:news", "phx_reply", OK]
    await api.abroadcast("topics:news", "headline", {"text": "hello"})
    for client in (target, other, anonymous):
        assert await receive(client) == ["1", None, "topics:news", "headline", {"text": "hello"}]
    for bad in (("topics:x", "e", {}), ("nowhere:x", "e", {}), ("topics:news", "phx_x", {}),
                ("topics:news", "e", ["not", "an object"])):
        with pytest.raises(api.BroadcastError):
            await api.abroadcast(*bad)
    await api.adisconnect(USER)
    assert await target.receive_output(timeout=5) == {"type": "websocket.close", "code": 1001}
    await assert_marker_is_next(receive, "topics:news", (other, "1"), (anonymous, "1"))  # open
    await send(other, None, "2", "phoenix", "heartbeat", {})
    assert await receive(other) == [None, "2", "phoenix", "phx_reply", OK]
    for client in (target, other, anonymous):
        await client.disconnect()


# --- limits --------------------------------------------------------------------------------


async def test_publishes_past_the_token_bucket_are_rate_limited_and_the_socket_stays(settings):
    settings.DPS_PUBLISH_RATE = 0.001  # no refill within the test
    settings.DPS_PUBLISH_BURST = 2
    client = await connect(token_query())
    await send(client, "1", "1", "topics:matrix", "phx_join", {})
    await receive(client)
    for ref in ("2", "3"):
        await send(client, "1", ref, "topics:matrix", "publish", ["e", {}])
        assert await receive(client) == ["1", ref, "topics:matrix", "phx_reply", OK]
        assert (await receive(client))[3] == "e"
    await send(client, "1", "4", "topics:matrix", "publish", ["e", {}])
    assert await receive(client) == ["1", "4", "topics:matrix", "phx_reply", error("rate limited")]
    await send(client, None, "5", "phoenix", "heartbeat", {})
    assert await receive(client) == [None, "5", "phoenix", "phx_reply", OK]
    await client.disconnect()


async def test_a_payload_over_the_limit_gets_an_error_reply(settings):
    settings.DPS_MAX_PAYLOAD_BYTES = 100
    client = await connect(token_query())
    await send(client, "1", "1", "topics:matrix", "phx_join", {})
    await receive(client)
    await send(client, "1", "2", "topics:matrix", "publish", ["e", {"pad": "x" * 120}])
    reply = await receive(client)
    assert reply[4] == error("payload too large (130 bytes, limit 100)")
    await send(client, "1", "3", "topics:matrix", "publish", ["e", {"pad": "x" * 80}])
    assert await receive(client) == ["1", "3", "topics:matrix", "phx_reply", OK]
    await client.disconnect()


async def test_connections_per_node_and_per_identity_are_limited(settings):
    settings.DPS_MAX_CONNECTIONS_PER_IDENTITY = 1
    first = await connect(token_query())
    assert await refused(token_query())  # the same user again
    second = await connect(token_query(SimpleNamespace(pk=2)))
    settings.DPS_MAX_CONNECTIONS = 2
    assert await refused(token_query(SimpleNamespace(pk=3)))  # the node is full
    await first.disconnect()
    third = await connect(token_query(SimpleNamespace(pk=3)))
    refusals = connections.refused_handshakes()
    assert any("DPS_MAX_CONNECTIONS_PER_IDENTITY" in r for r in refusals)
    assert any(r.endswith("at DPS_MAX_CONNECTIONS") for r in refusals)
    await second.disconnect()
    await third.disconnect()
    assert connections.open_sockets() == 0


async def test_a_refusal_uses_the_denial_response_where_the_server_offers_it():
    from topics.transport.handshake import refuse

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await refuse({"extensions": {"websocket.http.response": {}}}, send, 503, "full")
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 503
    assert sent[1] == {"type": "websocket.http.response.body", "body": b"full"}
    sent.clear()
    await refuse({}, send, 503, "full")  # no extension: the close that every server makes a 403
    assert sent == [{"type": "websocket.close"}]


def test_dps_publish_refuses_without_a_cluster_and_for_bad_input(monkeypatch, settings):
    from django.core.management import CommandError, call_command

    monkeypatch.delenv("DPS_CLUSTER", raising=False)
    with pytest.raises(CommandError, match="no cluster configured"):
        call_command("dps_publish", "topics:news", "e", "{}")
    settings.DPS_CLUSTER = {"nodes": [{"name": "ws-a", "role": "ws", "redis": "redis://x/0"}]}
    with pytest.raises(CommandError, match="PAYLOAD is not JSON"):
        call_command("dps_publish", "topics:news", "e", "{nope")
    with pytest.raises(CommandError, match="payload must be a JSON object"):
        call_command("dps_publish", "topics:news", "e", "[1]")


async def test_presence_update_sends_one_diff_with_phx_ref_prev(handler_routes, settings):
    """``topics.api.presence_update``: the updated member's old meta leaves and its new one
    joins, naming the old ``phx_ref``, in one ``presence_diff`` (Phoenix's Presence.update)."""
    settings.DPS_PRESENCE = ["rooms:*"]
    settings.DPS_LAYER = {**getattr(settings, "DPS_LAYER", {}), "presence_interval": 0.05}
    alice, bob = await connect(token_query(SimpleNamespace(pk=1))), await connect(token_query())

    async def presence_of(client, join_ref: str) -> dict:
        await send(client, join_ref, join_ref, "rooms:lobby", "phx_join", {"pass": "word"})
        assert (await receive(client))[4]["status"] == "ok"
        frame = await receive(client)
        assert frame[3] == "presence_state"
        return frame[4]

    await presence_of(alice, "1")
    state = await presence_of(bob, "9")
    [old] = state["1"]["metas"]
    while "42" not in state:  # until bob's own join has reached him in a diff
        diff = await receive(bob)
        assert diff[3] == "presence_diff"
        state.update(diff[4]["joins"])
    await api.apresence_update(api.Identity("1"), "rooms:lobby", {"status": "away"})
    diff = await receive(bob)
    assert diff[3] == "presence_diff"
    [new] = diff[4]["joins"]["1"]["metas"]
    assert diff[4]["leaves"] == {"1": {"metas": [old]}}
    assert new == {"online_at": old["online_at"], "status": "away",
                   "phx_ref_prev": old["phx_ref"], "phx_ref": new["phx_ref"]}
    assert new["phx_ref"] != old["phx_ref"]
    presence = await api.apresence("rooms:lobby")
    assert presence["1"]["metas"] == [new]
    with pytest.raises(ValueError):
        await api.apresence_update(api.Identity(), "rooms:lobby", {})
    await bob.disconnect()
    await alice.disconnect()


async def test_a_presence_update_the_owner_does_not_take_is_counted_and_keeps_the_old_meta(
        handler_routes, settings, monkeypatch, caplog):
    settings.DPS_PRESENCE = ["rooms:*"]
    alice = await connect(token_query(SimpleNamespace(pk=1)))
    await send(alice, "1", "1", "rooms:lobby", "phx_join", {"pass": "word"})
    assert (await receive(alice))[4]["status"] == "ok"
    [old] = (await api.apresence("rooms:lobby"))["1"]["metas"]
    layer = channel_layers["default"]

    async def unreachable_owner(*args, **kwargs):
        raise ConnectionError("the owner's Redis does not answer")

    monkeypatch.setattr(layer, "group_join", unreachable_owner)
    failures = ws_counters.COUNTS.presence_update_errors
    with caplog.at_level(logging.WARNING, logger=consumer_module.__name__):
        await api.apresence_update(api.Identity("1"), "rooms:lobby", {"status": "away"})
        await settle_until(lambda: ws_counters.COUNTS.presence_update_errors > failures,
                           "the failed update counted")
    assert ws_counters.COUNTS.presence_update_errors == failures + 1
    assert "presence update on rooms:lobby failed: unavailable" in caplog.text
    monkeypatch.undo()
    assert (await api.apresence("rooms:lobby"))["1"]["metas"] == [old]
    await alice.disconnect()
