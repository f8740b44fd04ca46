"""The plain-Channels baseline over channels_redis' ``RedisChannelLayer``."""
from topics.devtools.benchmark.baseline_settings import CHANNEL_CAPACITY, redis_hosts
from topics.devtools.benchmark.settings_plain import *  # noqa: F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                              "CONFIG": {"hosts": redis_hosts(), "capacity": CHANNEL_CAPACITY}}}
