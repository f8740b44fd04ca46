"""The Phoenix Channels protocol, sans I/O: serializers, topic rules and the socket state
machine. Nothing here touches sockets, event loops, clocks or Django; ``topics.transport.consumer``
is the adapter that does.
"""
from topics.protocol import v2_binary
from topics.protocol.actions import Action, Close, Publish, PublishBinary, SendFrame, Subscribe, Unsubscribe
from topics.protocol.message import MalformedFrame, Message, Ref, encode_event
from topics.protocol.serializers import DEFAULT_VSN, SERIALIZERS, Serializer, serializer_for_query_string
from topics.protocol.socket import (
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_TOPICS,
    PhoenixSocket,
    publish_error,
)
from topics.protocol.topic_names import INVALID_NAME, group_for_topic, is_valid_topic

__all__ = [
    "Action", "Close", "Publish", "PublishBinary", "SendFrame", "Subscribe", "Unsubscribe",
    "MalformedFrame", "Message", "Ref", "encode_event",
    "DEFAULT_VSN", "SERIALIZERS", "Serializer", "serializer_for_query_string",
    "CLOSE_GOING_AWAY", "CLOSE_INVALID_DATA", "CLOSE_NORMAL", "CLOSE_TOO_BIG", "CLOSE_UNSUPPORTED_DATA",
    "DEFAULT_MAX_FRAME_BYTES", "DEFAULT_MAX_TOPICS", "PhoenixSocket", "publish_error",
    "INVALID_NAME", "group_for_topic", "is_valid_topic", "v2_binary",
]
