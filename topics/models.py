"""DPS's models: one table, and two unmanaged models with none.

``TokenVersion``: the socket-token version of each user whose tokens were revoked. A token names
the version its user had when it was signed (no row: 0); :func:`topics.hooks.auth.revoke_tokens`
increments it, so every older token is refused.

``Cluster`` and ``Topics`` are never stored: they make the DPS pages entries of the admin's own
index ("DPS: Cluster, Topics") in any project. Django lists an app's registered models, and a
``ModelAdmin``'s ``get_urls`` mounts the pages under ``admin/dps/<model>/`` (see
:mod:`topics.operator.admin_pages`).
"""
from django.conf import settings
from django.db import models


class TokenVersion(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                primary_key=True, related_name="dps_token_version")
    version = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "socket-token version"

    def __str__(self) -> str:
        return f"{self.user_id}: {self.version}"


class Cluster(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = verbose_name_plural = "Cluster: nodes and ring"


class Topics(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = verbose_name_plural = "Topics"
