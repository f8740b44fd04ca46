"""The site's settings over channels_redis' ``RedisChannelLayer`` (a benchmark baseline)."""
from dps_site.settings import *  # noqa: F403
from topics.devtools.benchmark.baseline_settings import CHANNEL_CAPACITY, redis_hosts

CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                              "CONFIG": {"hosts": redis_hosts(), "capacity": CHANNEL_CAPACITY}}}
