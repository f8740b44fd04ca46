"""The long-poll transport (topics.transport.longpoll) through the ASGI app, in process on DPS's embedded
cluster: phoenix.js's HTTP exchange, the bounds of a session, and bodies that are not frames.
phoenix.js's own LongPoll client runs against a real cluster in tests/e2e/test_interop_phoenix_js.py."""
from __future__ import annotations

import asyncio
import base64
import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from dps_site.asgi import application
from tests.support.waiting import settle_until
from topics.hooks.auth import issue_token
from topics.protocol import v2_binary
from topics.transport import longpoll
from topics.transport.longpoll_http import SESSION_TOKEN_PREFIX, read_request

OK = {"status": "ok", "response": {}}
NDJSON = b"application/x-ndjson"


@pytest.fixture(autouse=True)
def embedded_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channel_layer.DPSChannelLayer"}}
    settings.DPS_LONGPOLL_WINDOW = 0.3
    yield
    layer = channel_layers.backends.get("default")
    if layer is not None:
        async_to_sync(layer.close)()


async def request(method: str, query: str = "", body: bytes = b"",
                  content_type: bytes = NDJSON, headers: dict[str, str] | None = None,
                  response_headers: dict | None = None) -> tuple[int, dict]:
    scope = {"type": "http", "method": method, "path": longpoll.PATH,
             "query_string": query.encode(), "headers": [(b"content-type", content_type)] + [
                 (k.encode(), v.encode()) for k, v in (headers or {}).items()]}
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await application(scope, receive, send)
    if response_headers is not None:
        response_headers.update((k.decode(), v.decode()) for k, v in sent[0]["headers"])
    return sent[0]["status"], json.loads(sent[1]["body"] or b"null")


async def open_session(query: str = "vsn=2.0.0", **headers: str) -> str:
    status, body = await request("GET", query, headers=headers)
    assert (status, body["status"]) == (200, 410), body
    assert body["token"].startswith(SESSION_TOKEN_PREFIX)
    return body["token"]


def ndjson(*frames: list | bytes) -> bytes:
    return b"\n".join(base64.b64encode(f) if isinstance(f, bytes) else json.dumps(f).encode()
                      for f in frames)


async def post(token: str, *frames: list | bytes, **headers: str) -> dict:
    return (await request("POST", f"token={token}", ndjson(*frames), headers=headers))[1]


async def poll(token: str, **headers: str) -> dict:
    return (await request("GET", f"token={token}", headers=headers))[1]


async def poll_messages(token: str, count: int) -> list:
    messages: list = []
    for _ in range(20):
        answer = await poll(token)
        assert answer["status"] in (200, 204), answer
        messages += [json.loads(text) for text in answer["messages"]]
        if len(messages) >= count:
            return messages
    raise AssertionError(f"got {messages}, wanted {count} messages")


async def test_a_session_joins_publishes_and_receives_in_order():
    token = await open_session()
    assert await post(token, ["1", "1", "topics:matrix", "phx_join", {}],
                      ["1", "2", "topics:matrix", "publish", ["event", {"n": 1}]]) == {
        "status": 200}
    assert await poll_messages(token, 3) == [
        ["1", "1", "topics:matrix", "phx_reply", OK],
        ["1", "2", "topics:matrix", "phx_reply", OK],
        ["1", None, "topics:matrix", "event", {"n": 1}]]


async def test_a_poll_with_nothing_to_say_answers_204_after_the_window():
    token = await open_session()
    assert await poll(token) == {"status": 204, "token": token, "messages": []}


async def test_a_poll_naming_no_session_gets_a_new_session_as_in_phoenix():
    """phoenix.js 1.7 would poll on with ``token=undefined`` after a bare 410."""
    status, body = await request("GET", f"vsn=2.0.0&token={SESSION_TOKEN_PREFIX}nope")
    assert (status, body["status"], body["messages"]) == (200, 410, [])
    assert body["token"].startswith(SESSION_TOKEN_PREFIX)
    assert (await request("POST", f"token={SESSION_TOKEN_PREFIX}nope", b"[]"))[1] == {
        "status": 410}


async def test_a_session_for_a_stale_token_errors_at_its_first_poll_unless_posted_to():
    # phoenix.js 1.7 takes the new token and polls, believing its channels joined: the error
    # makes it reconnect and rejoin. A client that rejoins by itself posts first.
    stale = await open_session(f"vsn=2.0.0&token={SESSION_TOKEN_PREFIX}old")
    assert await poll(stale) == {"status": 500}
    assert (await request("GET", f"token={stale}"))[1]["status"] == 410  # gone
    rejoining = await open_session(f"vsn=2.0.0&token={SESSION_TOKEN_PREFIX}old")
    assert await post(rejoining, ["1", "1", "topics:stale", "phx_join", {}]) == {"status": 200}
    assert (await poll_messages(rejoining, 1))[0][3] == "phx_reply"


async def test_a_closed_session_is_replaced_at_its_next_poll(settings):
    settings.DPS_LONGPOLL_MAX_BUFFER_BYTES = 2000
    token = await open_session()
    await post(token, ["1", "1", "topics:matrix", "phx_join", {}],
               *[["1", str(n), "topics:matrix", "publish", ["e", {"pad": "x" * 100}]]
                 for n in range(2, 30)])
    answer = await poll(token)
    assert answer["status"] == 410 and answer["token"] not in (None, token)


async def test_the_session_token_header_of_newer_phoenix_js_names_the_session():
    token = await open_session()
    header = {"x-phoenix-longpoll-token": token}
    assert await post("", ["1", "1", "topics:hdr", "phx_join", {}], **header) == {
        "status": 200}
    answer = (await request("GET", "", headers=header))[1]
    assert answer["token"] == token and json.loads(answer["messages"][0])[3] == "phx_reply"


@pytest.fixture
def signed_in(settings, transactional_db):
    """Anonymous sockets refused; a signed token for user 7 (a real, active user: the
    connect hook looks the user up)."""
    from django.contrib.auth import get_user_model

    settings.DPS_ALLOW_ANONYMOUS = False
    return issue_token(get_user_model().objects.create_user("user7", id=7))


@pytest.mark.parametrize("how", ["header", "auth_token", "params"])
async def test_the_signed_auth_token_opens_a_session(signed_in, how):
    assert (await request("GET", "vsn=2.0.0"))[1] == {"status": 403}  # anonymous: refused
    query, headers = "vsn=2.0.0", {}
    if how == "header":  # phoenix.js 1.8's authToken option
        headers = {"x-phoenix-authtoken": signed_in}
    elif how == "auth_token":
        query += f"&auth_token={signed_in}"
    else:  # phoenix.js's params: {token}; the session token is appended after them
        query = f"token={signed_in}&vsn=2.0.0"
    token = await open_session(query, **headers)
    session_query = f"{query}&token={token}"
    assert (await request("POST", session_query, ndjson(["1", "1", "topics:signed", "phx_join",
                                                         {}]), headers=headers))[1] == {
        "status": 200}
    answer = (await request("GET", session_query, headers=headers))[1]
    assert answer["status"] == 200 and answer["token"] == token


async def test_a_session_is_bound_to_the_auth_token_that_made_it(signed_in):
    header = {"x-phoenix-authtoken": signed_in}
    token = await open_session(**header)
    # A poll without the token names no session: a new (anonymous, so refused) one.
    assert await poll(token) == {"status": 403}
    # A post with another token is refused; one without it is what phoenix.js 1.8 sends.
    assert await post(token, ["1", "1", "topics:b", "phx_join", {}],
                      **{"x-phoenix-authtoken": signed_in + "x"}) == {"status": 410}
    assert await post(token, ["1", "1", "topics:b", "phx_join", {}]) == {"status": 200}
    assert (await poll(token, **header))["status"] == 200


@pytest.fixture
def origins(settings):
    settings.DPS_ALLOWED_ORIGINS = ["http://localhost", "http://127.0.0.1"]


async def test_a_session_is_bound_to_its_origin(origins):
    """The issue's probe: a cookieless client with a foreign Origin used a user's session."""
    own = {"origin": "http://localhost"}
    token = await open_session(**own)
    evil = {"origin": "http://evil.example"}
    assert await post(token, ["1", "1", "topics:o", "phx_join", {}], **evil) == {"status": 403}
    assert await poll(token, **evil) == {"status": 403}
    other = {"origin": "http://127.0.0.1"}  # allowed, but not the session's
    assert await post(token, ["1", "1", "topics:o", "phx_join", {}], **other) == {"status": 410}
    assert await post(token, ["1", "1", "topics:o", "phx_join", {}], **own) == {"status": 200}
    assert await post(token, ["1", "2", "topics:o", "phx_leave", {}]) == {"status": 200}


def test_a_session_is_bound_to_its_session_cookie():
    def credentials(cookie: str | None, query: str = ""):
        headers = [(b"cookie", cookie.encode())] if cookie else []
        return read_request({"method": "GET", "query_string": query.encode(),
                             "headers": headers}).credentials

    made = credentials("sessionid=abc; theme=dark")
    assert credentials("theme=light; sessionid=abc").can_use(made, polling=True)
    assert not credentials(None).can_use(made, polling=False)
    assert not credentials("sessionid=abd").can_use(made, polling=False)
    assert not credentials("sessionid=abc", "auth_token=t").can_use(made, polling=False)


async def test_cors_answers_allowed_origins_only(origins):
    headers: dict = {}
    status, body = await request("OPTIONS", headers={
        "origin": "http://localhost", "access-control-request-headers": "content-type"},
        response_headers=headers)
    assert (status, body) == (200, None)
    assert headers["access-control-allow-origin"] == "http://localhost"
    assert headers["access-control-allow-headers"] == "content-type"
    assert headers["access-control-allow-methods"] == "get, post, options"
    headers.clear()
    assert (await request("OPTIONS", headers={"origin": "http://evil.example"},
                          response_headers=headers))[1] == {"status": 403}
    assert "access-control-allow-origin" not in headers
    await request("GET", "vsn=2.0.0", headers={"origin": "http://localhost"},
                  response_headers=headers)
    assert headers["access-control-allow-origin"] == "http://localhost"


async def test_a_post_is_answered_once_its_frames_are_handled():
    token = await open_session()
    session = application.application_mapping["http"].longpoll.sessions[token]
    assert await post(token, ["1", "1", "topics:waits", "phx_join", {}]) == {"status": 200}
    # Phoenix answers a POST after dispatching its frames: the join's reply is already out.
    assert json.loads(session._outbox[0])[3] == "phx_reply"


async def test_a_post_of_more_frames_than_the_cap_is_refused_whole(settings):
    settings.DPS_LONGPOLL_MAX_FRAMES_PER_POST = 3
    refused = longpoll.STATS["refused_too_many_frames"]
    token = await open_session()
    beat = [None, "1", "phoenix", "heartbeat", {}]
    assert await post(token, beat, beat, beat, beat) == {"status": 413}
    assert longpoll.STATS["refused_too_many_frames"] == refused + 1
    assert await poll(token) == {"status": 204, "token": token, "messages": []}
    # Empty lines are no frames: three heartbeats among blank lines are within the cap.
    body = b"\n\r\n" + ndjson(beat, beat) + b"\n\n\n" + ndjson(beat) + b"\r\n\n"
    assert (await request("POST", f"token={token}", body))[1] == {"status": 200}
    assert len(await poll_messages(token, 3)) == 3


async def test_an_unsupported_vsn_is_forbidden():
    assert (await request("GET", "vsn=9.9.9"))[1] == {"status": 403}


async def test_a_binary_push_reaches_websocket_members_as_binary_and_long_poll_as_base64():
    ws = WebsocketCommunicator(application, "/socket/websocket?vsn=2.0.0")
    assert (await ws.connect())[0]
    await ws.send_json_to(["9", "9", "topics:matrix", "phx_join", {}])
    await ws.receive_json_from()
    token = await open_session()
    await post(token, ["1", "1", "topics:matrix", "phx_join", {}])
    await poll_messages(token, 1)
    await post(token, v2_binary.encode_push("1", "2", "topics:matrix", "blob", b"\x00\xff"))
    assert await poll_messages(token, 2) == [
        ["1", "2", "topics:matrix", "phx_reply", OK],
        [None, None, "topics:matrix", "blob", {"binary": "AP8="}]]
    assert await ws.receive_output(timeout=2) == {"type": "websocket.send", "bytes": (
        v2_binary.encode_broadcast("topics:matrix", "blob", b"\x00\xff"))}
    await ws.disconnect()


async def test_a_session_over_its_buffer_ends(settings):
    settings.DPS_LONGPOLL_MAX_BUFFER_BYTES = 2000
    closed_before = longpoll.STATS["closed_buffer_full"]
    token = await open_session()
    await post(token, ["1", "1", "topics:matrix", "phx_join", {}],
               *[["1", str(n), "topics:matrix", "publish", ["e", {"pad": "x" * 100}]]
                 for n in range(2, 30)])
    await settle_until(lambda: longpoll.STATS["closed_buffer_full"] > closed_before,
                       "the session to overflow")
    assert (await poll(token))["status"] == 410


async def test_a_session_nobody_polls_expires_and_leaves_its_topics(settings, loop_clock):
    settings.DPS_LONGPOLL_IDLE_TIMEOUT = 0.4
    token = await open_session()
    await post(token, ["1", "1", "topics:idle", "phx_join", {}])
    await poll_messages(token, 1)
    layer = channel_layers["default"]
    assert layer.runtime.membership.groups.get("topics.idle")
    await loop_clock.advance(0.3)  # the reaper (every half timeout) runs, too early to reap
    assert layer.runtime.membership.groups.get("topics.idle")
    await loop_clock.advance(0.3)  # idle for 0.6 s now, over the 0.4 s: the next round reaps
    await settle_until(lambda: not layer.runtime.membership.groups.get("topics.idle"),
                       "the session to expire")
    assert (await poll(token))["status"] == 410


async def test_a_body_over_the_limit_gets_413(settings):
    settings.DPS_LONGPOLL_MAX_BODY_BYTES = 100
    token = await open_session()
    status, body = await request("POST", f"token={token}", b"[" * 101)
    assert (status, body) == (413, {"status": 413})


async def test_a_body_that_is_not_utf8_ends_the_session():
    token = await open_session()
    assert (await request("POST", f"token={token}", b"\xff\xfe"))[1] == {"status": 400}
    assert (await poll(token))["status"] == 410


async def test_a_line_that_is_not_a_frame_gets_the_websocket_answer():
    token = await open_session()
    assert (await request("POST", f"token={token}", b'[null,"7","phoenix","heartbeat",{}]\n'
                          b'["1","8","topics:x"]'))[1] == {"status": 200}
    # The heartbeat's reply, then the 5-element rule: an error reply where a ref is readable.
    messages = await poll_messages(token, 2)
    assert messages[0] == [None, "7", "phoenix", "phx_reply", OK]
    assert messages[1][3] == "phx_reply" and messages[1][4]["status"] == "error"


async def test_other_methods_are_bad_requests():
    scope_status, _ = await request("PUT")
    assert scope_status == 400
