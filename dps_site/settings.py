"""Django settings for a DPS node.

DEBUG is off unless ``DJANGO_DEBUG=1`` (or the command is ``runserver`` / ``runcluster``); with
DEBUG off a node needs ``DJANGO_SECRET_KEY`` and ``DJANGO_ALLOWED_HOSTS``.

Every node (WS or TS) loads these settings. Which node a process is comes from the
``DPS_NODE`` environment variable, and the cluster it belongs to from the file named by
``DPS_CLUSTER`` (see ``channel_layer/cluster.py``). With neither set, the process runs the
embedded development cluster: one WS node with an in-process topic server and no Redis.

This is the repository's own site: it reads its ``DPS_*`` and ``DJANGO_*`` settings from the
environment (docs/settings.md, "The repository's site"). In any other project DPS's settings
are plain Django settings; only ``DPS_CLUSTER`` and ``DPS_NODE`` are read from the environment.
A malformed variable stops the process with one line naming it.
"""
import json
import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Development defaults (DEBUG on, anonymous sockets allowed) only for the development commands;
# runcluster passes them to its nodes in the environment. An explicit variable always wins.
_DEVELOPMENT_COMMAND = sys.argv[1:2] in (["runserver"], ["runcluster"])


def _bad_environment(name: str, value: str, expected: str) -> SystemExit:
    # Settings are read before logging or checks exist: one clear line, not a traceback.
    return SystemExit(f"dps_site settings: {name}={value!r} in the environment: expected {expected}")


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise _bad_environment(name, value, "an integer") from None


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return default if value is None else float(value)
    except ValueError:
        raise _bad_environment(name, value, "a number") from None


def _list(name: str, default: str = "") -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def _json_object(name: str) -> dict:
    value = os.environ.get(name, "{}")
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise _bad_environment(name, value, f"a JSON object ({exc})") from None
    if not isinstance(parsed, dict):
        raise _bad_environment(name, value, "a JSON object")
    return parsed


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _flag(name: str, development_default: bool) -> bool:
    return _env_flag(name, development_default and _DEVELOPMENT_COMMAND)


DEVELOPMENT_SECRET_KEY = "dps-development-only-not-secret"
DEBUG = _flag("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or DEVELOPMENT_SECRET_KEY
# Keys that still verify signatures (sessions, socket tokens) after a rotation: the old key(s),
# comma-separated, until what they signed has expired.
SECRET_KEY_FALLBACKS = [k.strip() for k in os.environ.get("DJANGO_SECRET_KEY_FALLBACKS", "")
                        .split(",") if k.strip()]
# Keys anyone can read. With one of them, a WS node refuses to start with DEBUG off or on a
# non-loopback bind (dps_site/asgi.py) and no token is signed with DEBUG off
# (topics.hooks.auth), while manage.py's other commands (migrate, createsuperuser) work.
DPS_PUBLIC_SECRET_KEYS = [DEVELOPMENT_SECRET_KEY]
# Empty unless set: Django then serves no host with DEBUG off, and its local ones under DEBUG.
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",")
                 if h.strip()]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "topics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's look) from every WS node, DEBUG on or off, under any server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "dps_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "topics.asgi.application"

DATABASES = {
    "default": {
        # SQLite, creating the file 0600: it holds session keys and password hashes.
        "ENGINE": "dps_site.private_sqlite3",
        "NAME": os.environ.get("DPS_DATABASE", str(BASE_DIR / "db.sqlite3")),
    }
}

AUTH_PASSWORD_VALIDATORS = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# WhiteNoise serves straight from the apps' static folders (its finders), so a clean checkout
# needs no step; `DPS_STATIC_ROOT=... manage.py collectstatic` prepares a directory instead.
STATIC_ROOT = os.environ.get("DPS_STATIC_ROOT") or None
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Bearer token a Prometheus scrape must send to /metrics (WS nodes and topic servers). Unset,
# /metrics is closed (403) unless DPS_METRICS_PUBLIC opens it on purpose (default: DEBUG).
# Keep the token out of world-readable files: the environment, not settings.
DPS_METRICS_TOKEN = os.environ.get("DPS_METRICS_TOKEN", "")
DPS_METRICS_PUBLIC = _env_flag("DPS_METRICS_PUBLIC", DEBUG)
# The admin pages (topics.operator.admin_pages): rows per topics page, hot topics on the ring, the Redis
# timeout per node, and the most name-search matches read per topic server.
DPS_ADMIN_PAGE_SIZE = _int("DPS_ADMIN_PAGE_SIZE", 100)
DPS_ADMIN_TOP_TOPICS = _int("DPS_ADMIN_TOP_TOPICS", 50)
DPS_ADMIN_REDIS_TIMEOUT = _float("DPS_ADMIN_REDIS_TIMEOUT", 0.5)
DPS_ADMIN_SEARCH_LIMIT = _int("DPS_ADMIN_SEARCH_LIMIT", 10000)

# The DPS layer. Cluster membership and Redis addresses come from DPS_CLUSTER / DPS_NODE
# (or the DPS_CLUSTER setting); CONFIG holds the layer's limits (see README "Settings").
# Phoenix socket limits (topics/transport/consumer.py); the environment may override them.
DPS_IDLE_TIMEOUT = _float("DPS_IDLE_TIMEOUT", 60)
DPS_MAX_FRAME_BYTES = _int("DPS_MAX_FRAME_BYTES", 1024 * 1024)
DPS_MAX_TOPICS_PER_SOCKET = _int("DPS_MAX_TOPICS_PER_SOCKET", 100)
# Frames a socket may have waiting when the server applies backpressure (a slow client);
# past it the socket leaves its topics and is closed with 1013.
DPS_MAX_PENDING_FRAMES = _int("DPS_MAX_PENDING_FRAMES", 1000)
# Broadcast bytes written to a client's connection that it has not read yet; past this the
# socket leaves its topics and is closed with 1013 (a client too slow for what it joined).
DPS_MAX_SEND_BUFFER_BYTES = _int("DPS_MAX_SEND_BUFFER_BYTES", 4 * 1024 * 1024)
# Write broadcast frames straight to the connection (daphne, uvicorn) instead of through ASGI.
DPS_DIRECT_FRAMES = os.environ.get("DPS_DIRECT_FRAMES", "1") != "0"
# Server patches to switch off (docs/adapters.md): DPS_SERVER_PATCHES_OFF="daphne_scans,..." or
# "*" for all of them; every other patch is on inside its tested version window.
DPS_SERVER_PATCHES = {name.strip(): False for name in
                      os.environ.get("DPS_SERVER_PATCHES_OFF", "").split(",") if name.strip()}
# Bytes of received frames daphne may queue for a consumer before it stops reading the socket.
DPS_MAX_INBOUND_BUFFER_BYTES = _int("DPS_MAX_INBOUND_BUFFER_BYTES", 1024 * 1024)
# The long-poll transport (topics/transport/longpoll.py; README "Settings").
DPS_LONGPOLL_WINDOW = _float("DPS_LONGPOLL_WINDOW", 10)
DPS_LONGPOLL_IDLE_TIMEOUT = _float("DPS_LONGPOLL_IDLE_TIMEOUT", 20)
DPS_LONGPOLL_MAX_BUFFER_BYTES = _int("DPS_LONGPOLL_MAX_BUFFER_BYTES", 1024 * 1024)
DPS_LONGPOLL_MAX_SESSIONS = _int("DPS_LONGPOLL_MAX_SESSIONS", 10000)
DPS_LONGPOLL_MAX_BODY_BYTES = _int("DPS_LONGPOLL_MAX_BODY_BYTES", 4 * 1024 * 1024)
DPS_LONGPOLL_MAX_PENDING_FRAMES = _int("DPS_LONGPOLL_MAX_PENDING_FRAMES", 100)
# Frames in one POST (Phoenix's and phoenix.js's batch size); a POST of more is refused whole.
DPS_LONGPOLL_MAX_FRAMES_PER_POST = _int("DPS_LONGPOLL_MAX_FRAMES_PER_POST", 100)

# Who may connect (topics/hooks/auth.py) and what each topic namespace means (topics/hooks/handlers.py).
DPS_CONNECT = os.environ.get("DPS_CONNECT", "topics.hooks.auth.default_connect")
DPS_ALLOW_ANONYMOUS = _flag("DPS_ALLOW_ANONYMOUS", True)
DPS_TOKEN_TTL = _float("DPS_TOKEN_TTL", 3600)
# The seed's topics, and the demo chat's rooms (presence and history below; Phoenix's idiom,
# dps_site.chat).
DPS_TOPICS = {"topics:*": "topics.hooks.handlers.SeedTopic", "rooms:*": "dps_site.chat.ChatRoom"}
# Browser origins (scheme://host[:port], comma-separated) allowed to open sockets besides the
# handshake's own; unset: the literal hosts of ALLOWED_HOSTS on the node's scheme and port
# (topics/hooks/origin.py).
DPS_ALLOWED_ORIGINS = _list("DPS_ALLOWED_ORIGINS")
# Keys of POST /dps/api/publish (comma-separated in the environment); none: the API is closed.
DPS_API_KEYS = _list("DPS_API_KEYS")
# Limits of a WS node (topics/hooks/limits.py).
DPS_MAX_CONNECTIONS = _int("DPS_MAX_CONNECTIONS", 10000)
DPS_MAX_CONNECTIONS_PER_IDENTITY = _int("DPS_MAX_CONNECTIONS_PER_IDENTITY", 100)
DPS_PUBLISH_RATE = _float("DPS_PUBLISH_RATE", 100)
DPS_PUBLISH_BURST = _float("DPS_PUBLISH_BURST", 1000)
DPS_MAX_PAYLOAD_BYTES = _int("DPS_MAX_PAYLOAD_BYTES", 256 * 1024)

# Limits shared by the layer and the topic server (names in channel_layer/settings.py), as
# JSON in the environment so that one cluster file + one env var configure every node.
DPS_LAYER = _json_object("DPS_LAYER")

# Topics whose members are tracked (topics.transport.presence_tracking): the demo's rooms;
# history at the owner (size, ttl) for recovery is the layer's ``history`` setting below.
DPS_PRESENCE = _list("DPS_PRESENCE", "rooms:*")
DPS_PRESENCE_NAME_CHARS = _int("DPS_PRESENCE_NAME_CHARS", 32)

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channel_layer.DPSChannelLayer",
        "CONFIG": {
            # Where the layer's runtime runs (auto: the server's loop under daphne or uvicorn).
            "runtime_loop": os.environ.get("DPS_RUNTIME_LOOP", "auto"),
            "history": {"rooms.*": {"size": 100, "ttl": 300}},
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "dps": {"handlers": ["console"], "level": os.environ.get("DPS_LOG_LEVEL", "INFO")},
        "channel_layer": {"handlers": ["console"], "level": os.environ.get("DPS_LOG_LEVEL", "INFO")},
        "topics": {"handlers": ["console"], "level": os.environ.get("DPS_LOG_LEVEL", "INFO")},
    },
}
