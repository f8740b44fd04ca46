from django.conf import settings
from django.db import models


class Room(models.Model):
    name = models.SlugField(unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="rooms")

    def __str__(self) -> str:
        return self.name
