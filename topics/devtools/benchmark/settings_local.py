"""The site's settings over the in-process ``LocalBroadcastLayer`` (the "no layer" baseline)."""
from dps_site.settings import *  # noqa: F403

CHANNEL_LAYERS = {"default": {"BACKEND": "topics.devtools.local_broadcast.LocalBroadcastLayer"}}
