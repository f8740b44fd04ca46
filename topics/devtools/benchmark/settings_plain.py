"""The plain-Channels baseline's project settings: Django, Channels and nothing of DPS.

``settings_plain_redis`` and ``settings_plain_redis_pubsub`` add their ``CHANNEL_LAYERS``. The
benchmark sets ``DJANGO_SECRET_KEY``, ``DJANGO_ALLOWED_HOSTS`` and ``DPS_DATABASE`` for every
back end's servers (``topics.devtools.benchmark.servers``); they are read here the same way.
"""
import os

DEBUG = False
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1").split(",")
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "topics.devtools.benchmark.plain_urls"
ASGI_APPLICATION = "topics.devtools.benchmark.plain_asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("DPS_DATABASE", ":memory:")}}
USE_TZ = True
