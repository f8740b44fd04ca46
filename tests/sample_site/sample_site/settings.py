"""A Django site with users, a login page and rooms, that uses DPS as the README's "Use DPS in
your Django project" says. Production-style: every secret and host comes from the environment,
DEBUG is off, anonymous sockets are refused."""
import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = os.environ["DJANGO_ALLOWED_HOSTS"].split(",")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
    "topics",   # DPS: the Phoenix socket, tokens, topics.api, dps_* and topic_server commands
    "rooms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "sample_site.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request"]}}]
ASGI_APPLICATION = "sample_site.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ["SAMPLE_DATABASE"]}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGIN_URL = "/login/"

# --- DPS ------------------------------------------------------------------------------------
# The cluster (DPS_CLUSTER: the cluster file) and the node (DPS_NODE) come from the environment.
CHANNEL_LAYERS = {"default": {"BACKEND": "channel_layer.DPSChannelLayer"}}
DPS_TOPICS = {"rooms:*": "rooms.realtime.RoomTopic"}
DPS_API_KEYS = [os.environ["SAMPLE_API_KEY"]]
DPS_TOKEN_TTL = 600
# Pages of the site on other origins (here: its other nodes' ports) that may open sockets.
DPS_ALLOWED_ORIGINS = [o for o in os.environ.get("DPS_ALLOWED_ORIGINS", "").split(",") if o]
# Limits the tests lower through the environment (DPS_LIMITS, JSON).
globals().update(json.loads(os.environ.get("DPS_LIMITS", "{}")))
