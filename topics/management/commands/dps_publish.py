"""``python manage.py dps_publish TOPIC EVENT JSON``: broadcast to a topic's members from the
command line (any process with the cluster file; no DPS_NODE needed). Beside a running
``runcluster`` of the same project it publishes into that cluster with no environment
(``topics.management.cluster_lookup``)."""
from __future__ import annotations

import json
import os
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from topics.api import BroadcastError, abroadcast, encode_broadcast
from topics.management.cluster_lookup import adopt_running_cluster


class Command(BaseCommand):
    help = "Broadcast EVENT with the JSON object PAYLOAD to every member of TOPIC."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic")
        parser.add_argument("event")
        parser.add_argument("payload", help='a JSON object, e.g. \'{"message": "hi"}\'')

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            adopt_running_cluster()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if not (os.environ.get("DPS_CLUSTER") or getattr(settings, "DPS_CLUSTER", None)):
            # The embedded development cluster lives inside one process (runserver): a
            # publish from this one would reach no one.
            raise CommandError("no cluster configured: start runcluster in this project, or set "
                               "DPS_CLUSTER to the cluster file the nodes read")
        try:
            payload = json.loads(options["payload"])
        except ValueError as exc:
            raise CommandError(f"PAYLOAD is not JSON: {exc}") from None
        try:  # before the layer starts: a bad message needs no cluster to be refused
            encode_broadcast(options["topic"], options["event"], payload)
        except BroadcastError as exc:
            raise CommandError(str(exc)) from None
        async_to_sync(self._publish)(options["topic"], options["event"], payload)
        self.stdout.write(f"published {options['event']} to {options['topic']}")

    async def _publish(self, topic: str, event: str, payload: Any) -> None:
        try:
            await abroadcast(topic, event, payload)
        finally:
            await get_channel_layer().close()  # the publish is out before the process ends
