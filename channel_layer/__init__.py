"""DPS channel layer: consistent-hash routing of groups to topic servers over per-node Redis."""
from channel_layer.wire import MessageTooLarge

__all__ = ["DPSChannelLayer", "MessageTooLarge"]


def __getattr__(name: str):
    # Lazy, so that `import channel_layer.cluster` does not import Channels and Django.
    if name == "DPSChannelLayer":
        from channel_layer.layer import DPSChannelLayer

        return DPSChannelLayer
    raise AttributeError(name)
