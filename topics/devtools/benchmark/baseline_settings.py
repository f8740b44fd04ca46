"""What the benchmark's baseline back ends share: the site's settings, and the Redis they use.

Each baseline's settings module (``settings_redis``, ``settings_redis_pubsub``,
``settings_local``) is the repository site's settings with its own ``CHANNEL_LAYERS``; the
benchmark passes it as ``DJANGO_SETTINGS_MODULE`` to the servers it starts
(``topics.devtools.benchmark.servers``), so the site's settings know nothing of the benchmark.
"""
import os

# The one embedded Redis the benchmark starts for a channels_redis baseline (its pool raised:
# see servers.REDIS_POOL_QUERY).
REDIS_URL_ENV = "DPS_BENCH_REDIS_URL"


def redis_hosts() -> list[str]:
    return [os.environ[REDIS_URL_ENV]]
