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
from topics.protocol import v2_binary
from topics.transport import longpoll

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
                  content_type: bytes = NDJSON) -> tuple[int, dict]:
    scope = {"type": "http", "method": method, "path": longpoll.PATH,
             "query_string": query.encode(), "headers": [(b"content-type", content_type)]}
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
    return sent[0]["status"], json.loads(sent[1]["body"] or b"null")


async def open_session(query: str = "vsn=2.0.0") -> str:
    status, body = await request("GET", query)
    assert (status, body["status"]) == (200, 410)
    return body["token"]


async def post(token: str, *frames: list | bytes) -> dict:
    lines = [base64.b64encode(f) if isinstance(f, bytes) else json.dumps(f).encode()
             for f in frames]
    return (await request("POST", f"token={token}", b"\n".join(lines)))[1]


async def poll(token: str) -> dict:
    return (await request("GET", f"token={token}"))[1]


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


async def test_an_unknown_token_is_gone():
    assert (await request("GET", "token=nope"))[1] == {"status": 410}
    assert (await request("POST", "token=nope", b"[]"))[1] == {"status": 410}


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


async def wait_for(condition, what: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)  # re-check the condition; bounded by ``timeout``
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_session_over_its_buffer_ends(settings):
    settings.DPS_LONGPOLL_MAX_BUFFER_BYTES = 2000
    closed_before = longpoll.STATS["closed_buffer_full"]
    token = await open_session()
    await post(token, ["1", "1", "topics:matrix", "phx_join", {}],
               *[["1", str(n), "topics:matrix", "publish", ["e", {"pad": "x" * 100}]]
                 for n in range(2, 30)])
    await wait_for(lambda: longpoll.STATS["closed_buffer_full"] > closed_before,
                   "the session to overflow")
    assert await poll(token) == {"status": 410}


async def test_a_session_nobody_polls_expires_and_leaves_its_topics(settings):
    settings.DPS_LONGPOLL_IDLE_TIMEOUT = 0.4
    token = await open_session()
    await post(token, ["1", "1", "topics:idle", "phx_join", {}])
    await poll_messages(token, 1)
    layer = channel_layers["default"]
    assert layer.runtime.membership.groups.get("topics.idle")
    await wait_for(lambda: not layer.runtime.membership.groups.get("topics.idle"), "the session to expire")
    assert (await poll(token)) == {"status": 410}


async def test_a_body_over_the_limit_gets_413(settings):
    settings.DPS_LONGPOLL_MAX_BODY_BYTES = 100
    token = await open_session()
    status, body = await request("POST", f"token={token}", b"[" * 101)
    assert (status, body) == (413, {"status": 413})


async def test_a_body_that_is_not_utf8_ends_the_session():
    token = await open_session()
    assert (await request("POST", f"token={token}", b"\xff\xfe"))[1] == {"status": 400}
    assert await poll(token) == {"status": 410}


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
