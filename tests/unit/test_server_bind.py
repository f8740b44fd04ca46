"""Where a WS node's server listens, read from its command line, and the per-connection guard
of a node with a public SECRET_KEY (topics.hooks.server_bind)."""
from __future__ import annotations

import pytest

from topics.hooks.auth import network_bind_refusal
from topics.hooks.server_bind import RefuseNetworkRequests, bind_hosts, network_hosts


@pytest.mark.parametrize(("argv", "network"), [
    (["/venv/bin/daphne", "-b", "0.0.0.0", "-p", "8000", "app"], ["0.0.0.0"]),
    (["/venv/lib/daphne/__main__.py", "--bind", "10.1.2.3", "app"], ["10.1.2.3"]),
    (["/venv/bin/daphne", "-e", "tcp:port=8000:interface=127.0.0.1", "app"], []),
    (["/venv/bin/daphne", "-e", "tcp:8000", "app"], ["0.0.0.0"]),  # every interface
    (["/venv/bin/daphne", "-u", "/run/dps.sock", "app"], []),
    (["/venv/bin/daphne", "app"], []),  # daphne's default: 127.0.0.1
    (["/venv/bin/daphne", "-b", "localhost", "app"], []),
    (["/venv/bin/daphne", "-b", "ws.example.com", "app"], ["ws.example.com"]),
    (["/venv/bin/uvicorn", "--host", "0.0.0.0", "app"], ["0.0.0.0"]),
    (["/venv/lib/uvicorn/__main__.py", "--host=::", "app"], ["::"]),
    (["/venv/bin/uvicorn", "--host", "::1", "app"], []),
    (["/venv/bin/uvicorn", "--uds", "/run/dps.sock", "app"], []),
    (["/venv/bin/uvicorn", "app"], []),
    (["/venv/bin/gunicorn", "-b", "0.0.0.0:80", "-k", "uvicorn.workers.UvicornWorker", "app"],
     ["0.0.0.0"]),
    (["/venv/bin/gunicorn", "--bind=[::]:80", "app"], ["[::]"]),
    (["/venv/bin/hypercorn", "-b", "127.0.0.1:8000", "app"], []),
    (["manage.py", "runserver", "0.0.0.0:8000"], ["0.0.0.0"]),
    (["manage.py", "runserver", "0:8000"], ["0.0.0.0"]),
    (["manage.py", "runserver", "8001"], []),
    (["manage.py", "runserver"], []),
])
def test_the_bind_is_read_from_the_servers_command_line(argv, network):
    assert network_hosts(argv) == network


def test_an_unknown_launcher_has_no_bind_to_read():
    assert bind_hosts(["/venv/bin/pytest", "-q"]) is None
    assert network_hosts(["/venv/bin/pytest"]) == []


def test_a_refusal_is_given_only_for_a_public_key_on_network_hosts(settings):
    settings.DPS_PUBLIC_SECRET_KEYS = ["public"]
    settings.SECRET_KEY = "a private key " * 4
    settings.SECRET_KEY_FALLBACKS = []
    assert network_bind_refusal(["0.0.0.0"]) is None
    settings.SECRET_KEY_FALLBACKS = ["public"]
    assert "refusing to serve on 0.0.0.0" in network_bind_refusal(["0.0.0.0"])
    assert network_bind_refusal([]) is None


async def _answer(app, scope: dict) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_requests_on_a_network_address_are_refused_and_loopback_ones_served():
    async def inner(scope, receive, send):
        await send({"type": "served"})

    guard = RefuseNetworkRequests(inner, "the key is public")
    for server in (("127.0.0.1", 8000), ("::1", 8000), None, ("/run/dps.sock", None)):
        assert await _answer(guard, {"type": "http", "server": server}) == [{"type": "served"}]
    refused = await _answer(guard, {"type": "http", "server": ("192.0.2.7", 8000)})
    assert refused[0]["status"] == 403 and refused[1]["body"] == b"the key is public\n"
    assert await _answer(guard, {"type": "websocket", "server": ("10.0.0.1", 80)}) == [
        {"type": "websocket.close"}]
