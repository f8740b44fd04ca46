"""The settings of in-process tests: dps_site's, with the development defaults that
``runcluster`` gives its nodes (DEBUG on, anonymous sockets allowed). Set here, in the
environment, so that the processes tests start inherit them too; a test that wants a
production-style node sets DJANGO_DEBUG, DJANGO_SECRET_KEY etc. itself.

A random SECRET_KEY for the run: Django's test runner turns DEBUG off, and with DEBUG off the
public development key signs nothing."""
import os
import secrets

os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("DPS_ALLOW_ANONYMOUS", "1")

from dps_site.settings import *  # noqa: E402,F403
