"""``manage.py benchmark_presence``: the cost of presence and history, each off and on."""
from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from topics.devtools.benchmark.presence_cost import CONFIGS, run_all


class Command(BaseCommand):
    help = "Measure what presence and history cost per join and per publish, and a join storm."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--members", type=int, default=200)
        parser.add_argument("--rate", type=float, default=20.0)
        parser.add_argument("--duration", type=float, default=10.0)
        parser.add_argument("--sockets", type=int, default=5000,
                            help="sockets of the join storm (0: no storm)")
        parser.add_argument("--configs", default=",".join(CONFIGS))
        parser.add_argument("--out", default="bench-results/presence")

    def handle(self, *args, **options) -> None:
        out = Path(options["out"])
        out.mkdir(parents=True, exist_ok=True)

        def say(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        with open(out / "servers.log", "w") as log:
            results = run_all(say, log, options["members"], options["rate"],
                              options["duration"], options["sockets"],
                              options["configs"].split(","))
        (out / "results.json").write_text(json.dumps(results, indent=2))
        say(f"results: {out / 'results.json'}")
