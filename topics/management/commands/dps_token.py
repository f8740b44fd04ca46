"""``python manage.py dps_token USERNAME [--ttl S]``: a socket token for a user (for scripts,
tests and clients that cannot log in through the site). Beside a running ``runcluster`` of the
same project the token is signed with that cluster's generated key
(``topics.management.cluster_lookup``)."""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from topics.hooks.auth import check_secret_key, issue_token
from topics.management.cluster_lookup import adopt_running_cluster


class Command(BaseCommand):
    help = "Print a signed, expiring DPS socket token for USERNAME (connect with ?token=...)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--ttl", type=float, default=None,
                            help="seconds the token is valid (default DPS_TOKEN_TTL, 3600)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            adopt_running_cluster()
            check_secret_key()  # before any query: say what is wrong with the setup first
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(options["username"])
        except model.DoesNotExist:
            raise CommandError(f"no user {options['username']!r}") from None
        try:
            self.stdout.write(issue_token(user, options["ttl"]))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
