"""``RedisTransport``'s backlog against a real Redis: what a restarted WS node skips, and what
a reader that does not skip (a topic server) still gets, in order."""
from __future__ import annotations

import redis

from channel_layer.cluster import Cluster, Node
from channel_layer.transport import RedisTransport


def one_node_cluster(url: str) -> Cluster:
    return Cluster((Node("ws-a", "ws", url), Node("ts-a", "ts", url)), "test")


async def test_a_skipped_backlog_is_trimmed_and_what_follows_is_read_in_order(redis_url):
    sender = RedisTransport(one_node_cluster(redis_url))
    receiver = RedisTransport(one_node_cluster(redis_url))
    try:
        await sender.push("ws-a", [b"old-1", b"old-2", b"old-3"])  # nobody subscribed: queued
        assert await receiver.discard_backlog("ws-a") == 3
        await sender.push("ws-a", [b"new-1", b"new-2"])  # behind the backlog, as a sender does
        entries = await receiver.read("ws-a", 100, 100)
        assert [data for _, data in entries] == [b"new-1", b"new-2"]
        assert await receiver.read("ws-a", 100, 10) == []  # trims what it handled
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.xlen("dps:inbox:ws-a") == 0
        finally:
            client.close()
        await sender.push("ws-a", [b"live"])
        assert [data for _, data in await receiver.read("ws-a", 100, 1000)] == [b"live"]
    finally:
        await sender.close()
        await receiver.close()


async def test_a_reader_that_does_not_skip_gets_the_whole_backlog(redis_url):
    sender = RedisTransport(one_node_cluster(redis_url))
    receiver = RedisTransport(one_node_cluster(redis_url))
    try:
        await sender.push("ts-a", [b"queued-1", b"queued-2"])
        assert [data for _, data in await receiver.read("ts-a", 100, 100)] == \
            [b"queued-1", b"queued-2"]
        assert await receiver.discard_backlog("ws-a") == 0  # an empty backlog: nothing to cut
    finally:
        await sender.close()
        await receiver.close()
