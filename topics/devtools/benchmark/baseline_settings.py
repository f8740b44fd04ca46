"""What the benchmark's baseline back ends share: the site's settings, and the Redis they use.

Each baseline's settings module (``settings_redis``, ``settings_redis_pubsub``,
``settings_local``; ``settings_plain_redis`` and ``settings_plain_redis_pubsub`` for the plain
Channels consumer) is a project's settings with its own ``CHANNEL_LAYERS``; the benchmark passes
it as ``DJANGO_SETTINGS_MODULE`` to the servers it starts (``topics.devtools.benchmark.servers``),
so the site's settings know nothing of the benchmark.
"""
import os

# The one embedded Redis the benchmark starts for a channels_redis baseline (its pool raised:
# see servers.REDIS_POOL_QUERY).
REDIS_URL_ENV = "DPS_BENCH_REDIS_URL"
# Messages a channel may queue (channels_redis' RedisChannelLayer and DPS's layer; default
# 100): RedisChannelLayer's group_send drops a message for a full channel without a word, so a
# consumer a few tens of milliseconds behind at 1,000 msg/s would lose messages to the limit,
# not to the load. Raised for every back end that has it (RedisPubSubChannelLayer has none).
CHANNEL_CAPACITY = 10_000


def redis_hosts() -> list[str]:
    return [os.environ[REDIS_URL_ENV]]
