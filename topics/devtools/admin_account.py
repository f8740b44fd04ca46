"""The first admin account of a fresh local cluster (``runcluster``), never a fixed password."""
from __future__ import annotations

import secrets

ADMIN_USERNAME = "admin"


def ensure_admin_account() -> tuple[str, str] | None:
    """Create a superuser with a generated password when the database has none; return its
    (username, password) to be shown once, or None when a superuser already exists."""
    from django.contrib.auth import get_user_model

    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(16)
    users.objects.create_superuser(ADMIN_USERNAME, password=password)
    return ADMIN_USERNAME, password
