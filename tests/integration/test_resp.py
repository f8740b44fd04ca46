"""The bare Redis connections of the hot path, against a real redis-server."""
from __future__ import annotations

import asyncio

import hiredis
import pytest
import redis

from channel_layer.resp import CommandPipe, RespConnection, RespError, encode_commands
from tests.support.waiting import await_until


def test_commands_are_encoded_as_resp_arrays():
    assert encode_commands([[b"PUBLISH", b"ch", b"a\r\nb"], [b"PING"]]) == (
        b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$4\r\na\r\nb\r\n*1\r\n$4\r\nPING\r\n")


async def test_concurrent_batches_each_get_their_own_replies_in_order(redis_factory):
    server = redis_factory()
    pipe = CommandPipe(server.url, timeout=2)
    try:
        batches = [[[b"INCRBY", b"counter", b"%d" % n] for n in (1, 2, 3)] for _ in range(20)]
        results = await asyncio.gather(*(pipe.execute(batch) for batch in batches))
        flat = [r for result in results for r in result]
        assert flat == [sum((1, 2, 3)[: i % 3 + 1]) + 6 * (i // 3) for i in range(60)]
        [refused] = await pipe.execute([[b"INCRBY", b"counter", b"not-a-number"]])
        assert isinstance(refused, hiredis.ReplyError)  # a refusal is a value, not a failure
        assert await pipe.execute([[b"GET", b"counter"]]) == [b"120"]
    finally:
        await pipe.close()


async def test_a_lost_connection_fails_what_waits_and_the_next_batch_reconnects(redis_factory):
    server = redis_factory()
    pipe = CommandPipe(server.url, timeout=2)
    admin = redis.Redis.from_url(server.url)
    try:
        assert await pipe.execute([[b"PING"]]) == [b"PONG"]
        blocked = asyncio.ensure_future(pipe.execute([[b"BLPOP", b"never", b"0"]]))
        await await_until(lambda: admin.info("clients")["blocked_clients"] == 1, 5,
                          "the BLPOP to block in Redis")
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        with pytest.raises(RespError):
            await asyncio.wait_for(blocked, 5)
        assert await pipe.execute([[b"PING"]]) == [b"PONG"]
    finally:
        admin.close()
        await pipe.close()


async def test_a_connection_with_a_wrong_password_is_refused(redis_factory):
    server = redis_factory()
    admin = redis.Redis.from_url(server.url)
    admin.config_set("requirepass", "right")
    admin.close()
    conn = RespConnection(f"redis://:wrong@127.0.0.1:{server.port}/0", timeout=2)
    with pytest.raises(RespError, match="AUTH"):
        await conn.open()
    await conn.close()
    good = RespConnection(f"redis://:right@127.0.0.1:{server.port}/0", timeout=2)
    await good.open()
    assert await good.command([b"PING"]) == b"PONG"
    await good.close()


async def test_a_batch_its_caller_gave_up_on_is_skipped_and_the_next_gets_its_own_reply(
        redis_factory):
    # Replies are matched in the read callback: a cancelled caller's batch still takes its
    # reply off the connection (in order), and the batch behind it gets the right one.
    server = redis_factory()
    pipe = CommandPipe(server.url, timeout=5)
    admin = redis.Redis.from_url(server.url)
    try:
        assert await pipe.execute([[b"PING"]]) == [b"PONG"]
        slow = asyncio.ensure_future(pipe.execute([[b"BLPOP", b"never", b"1"]]))
        await await_until(lambda: admin.info("clients")["blocked_clients"] == 1, 5,
                          "the BLPOP to block in Redis")
        slow.cancel()
        behind = await pipe.execute([[b"SET", b"k", b"v"], [b"GET", b"k"]])
        assert behind == [b"OK", b"v"]
        assert slow.cancelled()
        assert await pipe.execute([[b"PING"]]) == [b"PONG"]
    finally:
        admin.close()
        await pipe.close()
