"""``python manage.py benchmark_handlers``: what a topic handler costs per publish (in one
process; see topics/devtools/benchmark/handler_cost.py)."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from topics.devtools.benchmark.handler_cost import measure


class Command(BaseCommand):
    help = "Measure a topic handler's cost per publish: the seed's, an async and a sync one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--publishes", type=int, default=2000)
        parser.add_argument("--rounds", type=int, default=3)

    def handle(self, *args: Any, **options: Any) -> None:
        costs = measure(options["publishes"], options["rounds"])
        seed = costs[0]
        self.stdout.write(f"{'handler':<8} {'step CPU µs':>12} {'socket CPU µs':>14} "
                          f"{'socket over seed':>17}   (per publish)")
        for cost in costs:
            self.stdout.write(f"{cost.kind:<8} {cost.step_us:>12.2f} {cost.socket_cpu_us:>14.1f} "
                              f"{cost.socket_cpu_us - seed.socket_cpu_us:>+17.1f}")
