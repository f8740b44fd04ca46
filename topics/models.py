"""DPS's one table: the socket-token version of each user whose tokens were revoked.

A token names the version its user had when it was signed (no row: 0);
:func:`topics.hooks.auth.revoke_tokens` increments it, so every older token is refused.
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
