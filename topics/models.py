"""Two unmanaged models with no table, so that the DPS pages are entries of the admin's own
index ("DPS: Cluster, Topics") in any project: Django lists an app's registered models, and a
``ModelAdmin``'s ``get_urls`` mounts the pages under ``admin/dps/<model>/`` (see
:mod:`topics.operator.admin_pages`). Nothing is ever stored.
"""
from django.db import models


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
