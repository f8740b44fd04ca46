"""The plain-Channels baseline over channels_redis' ``RedisPubSubChannelLayer``."""
from topics.devtools.benchmark.baseline_settings import redis_hosts
from topics.devtools.benchmark.settings_plain import *  # noqa: F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                              "CONFIG": {"hosts": redis_hosts()}}}
