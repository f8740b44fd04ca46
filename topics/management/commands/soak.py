"""``python manage.py soak --minutes N``: churn and faults on a supervised local cluster.

A thin face over :mod:`topics.devtools.soak` (not part of the default test run; a short smoke run is).
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from topics.devtools.soak import soak


class Command(BaseCommand):
    help = ("Soak a local 2 WS + 2 TS cluster: churn, a topic-server and a WS-node SIGKILL "
            "(restarted by supervision); report lost/duplicated/out-of-order and RSS.")
    requires_system_checks = ()
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--minutes", type=float, default=10.0,
                            help="how long to run (default 10)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["minutes"] <= 0:
            raise CommandError("--minutes must be positive")
        report = soak(options["minutes"], say=self._say)
        for line in report.lines():
            self._say(line)
        if report.lost or report.duplicated or report.out_of_order:
            raise CommandError("the soak lost, duplicated or reordered messages")

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
