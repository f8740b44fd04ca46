"""Every DPS Django setting: its default, what it must be, and one line saying what it does.

This table is the reference that ``docs/settings.md`` documents and that
:mod:`topics.checks` enforces (``manage.py check`` names an unknown ``DPS_*`` key, a wrong type
or a bad value, and says what was expected). The modules that read a setting keep their own
default next to the read (the hot paths read plain attributes); a test walks the code's reads,
this table and the document, and fails when they differ.

Only two environment variables matter in every project: ``DPS_CLUSTER`` (the cluster file) and
``DPS_NODE`` (which node of it this process is). Every node of a deployment shares one settings
module, so a process's identity cannot be a setting alone; each overrides the setting of the
same name. Every other ``DPS_*`` environment variable is the repository site's
(``dps_site/settings.py`` turns them into these settings) and does nothing elsewhere.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from topics.adapters.access_log import DEFAULT_REDACTED_QUERY_PARAMETERS

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    expected: str          # what a good value is, as the check's message says it
    valid: Check
    doc: str


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_number(value: Any) -> bool:
    return _number(value) and value > 0


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def str_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items())


def optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def is_dict(value: Any) -> bool:
    return isinstance(value, dict)


MB = 1024 * 1024
SETTINGS: tuple[Setting, ...] = (
    # --- the cluster
    Setting("DPS_CLUSTER", None, "a dict {\"nodes\": [...]} as in a cluster file, or None",
            optional(is_dict), "The cluster when no `DPS_CLUSTER` file is named in the "
            "environment; neither: the embedded one-process cluster."),
    Setting("DPS_NODE", None, "a node name of the cluster, or None", optional(is_str),
            "Which node this process is, when `DPS_NODE` is not in the environment."),
    Setting("DPS_LAYER", {}, "a dict of the layer's settings (docs/settings.md, \"The layer\")",
            is_dict, "The layer's and the topic server's limits, merged over "
            "`CHANNEL_LAYERS[\"default\"][\"CONFIG\"]` on every node."),
    # --- who may connect, and what a topic means
    Setting("DPS_CONNECT", "topics.hooks.auth.default_connect",
            "the dotted path of a connect hook", is_str,
            "The connect hook: connect params and scope in, an `Identity` or None out."),
    Setting("DPS_ALLOW_ANONYMOUS", False, "True or False", is_bool,
            "Accept sockets with neither a token nor a session (development only)."),
    Setting("DPS_TOKEN_TTL", 3600.0, "a positive number of seconds", positive_number,
            "Lifetime of a token from `/dps/token/`, `dps_token` or `issue_token`."),
    Setting("DPS_TOPICS", {"topics:*": "topics.hooks.handlers.SeedTopic"},
            "a dict of topic glob → dotted path of a TopicHandler class", str_map,
            "Which handler serves which topics; a topic no pattern matches is refused."),
    Setting("DPS_ALLOWED_ORIGINS", [], "a list of origins such as \"https://example.com\"",
            str_list, "Browser origins that may open sockets; empty: the hosts of "
            "`ALLOWED_HOSTS`."),
    Setting("DPS_API_KEYS", [], "a list of strings", str_list,
            "Bearer keys of `POST /dps/api/publish`; empty: the API is closed."),
    Setting("DPS_PRESENCE", [], "a list of topic globs", str_list,
            "Topics whose members are tracked (presence)."),
    Setting("DPS_PRESENCE_NAME_CHARS", 32, "a positive integer", positive_int,
            "Longest presence name kept; longer names are cut."),
    # --- limits of a WS node
    Setting("DPS_MAX_CONNECTIONS", 10_000, "a positive integer", positive_int,
            "Open sockets per WS node process; past it a handshake gets 503."),
    Setting("DPS_MAX_CONNECTIONS_PER_IDENTITY", 100, "a positive integer", positive_int,
            "Open sockets per identity per WS node process; past it a handshake gets 429."),
    Setting("DPS_PUBLISH_RATE", 100.0, "a positive number per second", positive_number,
            "Publishes per second a socket may sustain."),
    Setting("DPS_PUBLISH_BURST", 1000.0, "a positive number", positive_number,
            "Publishes a socket may send at once before the rate applies."),
    Setting("DPS_MAX_PAYLOAD_BYTES", 256 * 1024, "a positive integer of bytes", positive_int,
            "Largest publish payload; larger ones are refused."),
    Setting("DPS_MAX_FRAME_BYTES", MB, "a positive integer of bytes", positive_int,
            "Largest client frame; a larger one closes the socket with 1009."),
    Setting("DPS_MAX_TOPICS_PER_SOCKET", 100, "a positive integer", positive_int,
            "Topics one socket may have joined at once."),
    Setting("DPS_IDLE_TIMEOUT", 60.0, "a positive number of seconds", positive_number,
            "A socket silent for this long (no heartbeat) is closed."),
    Setting("DPS_MAX_PENDING_FRAMES", 1000, "a positive integer", positive_int,
            "Frames waiting for a slow client; past it the socket is closed with 1013."),
    Setting("DPS_MAX_SEND_BUFFER_BYTES", 4 * MB, "a positive integer of bytes", positive_int,
            "Bytes written to a client and not read yet; past it the socket is closed with 1013."),
    Setting("DPS_MAX_INBOUND_BUFFER_BYTES", MB, "a positive integer of bytes", positive_int,
            "Received bytes daphne may queue for a socket before it stops reading it."),
    Setting("DPS_DIRECT_FRAMES", True, "True or False", is_bool,
            "Write broadcast frames straight to the connection (daphne, uvicorn)."),
    # --- long-poll
    Setting("DPS_LONGPOLL_WINDOW", 10.0, "a positive number of seconds", positive_number,
            "How long a long-poll GET waits for messages."),
    Setting("DPS_LONGPOLL_IDLE_TIMEOUT", 20.0, "a positive number of seconds", positive_number,
            "A long-poll session not polled for this long is closed."),
    Setting("DPS_LONGPOLL_MAX_BUFFER_BYTES", MB, "a positive integer of bytes", positive_int,
            "Bytes a long-poll session buffers between polls."),
    Setting("DPS_LONGPOLL_MAX_SESSIONS", 10_000, "a positive integer", positive_int,
            "Long-poll sessions per WS node process."),
    Setting("DPS_LONGPOLL_MAX_BODY_BYTES", 4 * MB, "a positive integer of bytes", positive_int,
            "Largest long-poll POST body."),
    Setting("DPS_LONGPOLL_MAX_PENDING_FRAMES", 100, "a positive integer", positive_int,
            "Posted frames a long-poll session may have waiting."),
    Setting("DPS_LONGPOLL_MAX_FRAMES_PER_POST", 100, "a positive integer", positive_int,
            "Frames in one long-poll POST; a POST of more is refused whole."),
    # --- the operator's view
    Setting("DPS_METRICS_TOKEN", "", "a string", is_str,
            "Bearer token `/metrics` requires; empty: no token."),
    Setting("DPS_ADMIN_PAGE_SIZE", 100, "a positive integer", positive_int,
            "Rows per page of the admin's topic list."),
    Setting("DPS_ADMIN_TOP_TOPICS", 50, "a positive integer", positive_int,
            "Hot topics shown on the cluster page."),
    Setting("DPS_ADMIN_REDIS_TIMEOUT", 0.5, "a positive number of seconds", positive_number,
            "How long the admin waits for each node's Redis."),
    Setting("DPS_ADMIN_SEARCH_LIMIT", 10_000, "a positive integer", positive_int,
            "Name-search matches read per topic server."),
    Setting("DPS_METRICS_PUBLIC", None, "True, False, or None (= DEBUG)", optional(is_bool),
            "Without `DPS_METRICS_TOKEN`: whether `/metrics` answers anyone (None: under DEBUG "
            "only)."),
    # --- security and the server adapters
    Setting("DPS_PUBLIC_SECRET_KEYS", [], "a list of strings", str_list,
            "SECRET_KEYs known to be public (a repository's development key): a node refuses "
            "them with DEBUG off or on a network address, and signs no token with them."),
    Setting("DPS_REDACTED_QUERY_PARAMETERS", list(DEFAULT_REDACTED_QUERY_PARAMETERS),
            "a list of query parameter names", str_list,
            "Query parameters whose values the servers' access logs show as `[redacted]`."),
    Setting("DPS_SERVER_PATCHES", {}, "a dict of patch name → False (docs/adapters.md)",
            lambda v: isinstance(v, dict) and all(isinstance(x, bool) for x in v.values()),
            "Server patches to switch off by name; every other one is on inside its tested "
            "version window."),
)
BY_NAME = {s.name: s for s in SETTINGS}
