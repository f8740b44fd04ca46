"""``python manage.py runcluster``: a whole local DPS cluster in one command.

A thin command-line face over :class:`topics.devtools.local_cluster.LocalCluster`; the orchestration
lives there so that tests and benchmarks start exactly the same cluster.
"""
from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from topics.devtools.admin_account import ensure_admin_account
from topics.devtools.local_cluster import (
    SERVERS,
    ClusterError,
    ClusterInterrupted,
    LocalCluster,
)

READY_LINE = "DPS cluster ready"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Start a local DPS cluster: an embedded Redis per node, WS nodes (daphne) on consecutive "
        "ports and TS nodes (topic_server). A node or Redis that exits is restarted with backoff "
        "(--fail-fast: the cluster stops instead). Ctrl-C or SIGTERM stops everything."
    )
    # Node processes check their own configuration; this parent only orchestrates.
    requires_system_checks = ()
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ws", type=_positive, default=2, help="WS nodes (default 2)")
        parser.add_argument("--ts", type=_positive, default=2, help="TS nodes (default 2)")
        parser.add_argument("--port", type=_positive, default=8000,
                            help="first WS port; WS nodes listen on P, P+1, ... (default 8000)")
        parser.add_argument("--host", default="127.0.0.1", help="WS listen address")
        parser.add_argument("--redis", metavar="URL",
                            help="use this Redis for every node instead of embedded ones")
        parser.add_argument("--server", choices=SERVERS, default="daphne",
                            help="ASGI server of the WS nodes (default daphne)")
        parser.add_argument("--no-migrate", dest="migrate", action="store_false",
                            help="skip `manage.py migrate` before starting")
        parser.add_argument("--fail-fast", action="store_true",
                            help="stop the whole cluster when any process exits, instead of "
                                 "restarting it (for scripts)")
        parser.add_argument("--ready-timeout", type=float, default=60.0,
                            help="seconds to wait for every WS node to listen (default 60)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            cluster = LocalCluster(
                options["ws"], options["ts"], port=options["port"], redis=options["redis"],
                host=options["host"], server=options["server"], migrate=options["migrate"],
                emit=self._emit, supervise=not options["fail_fast"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: cluster.request_stop())
        try:
            cluster.start(timeout=options["ready_timeout"])
            self._announce(cluster)
            failure = cluster.wait()
        except ClusterInterrupted:
            failure = None
        except ClusterError as exc:
            failure = str(exc)
        finally:
            cluster.say("stopping")
            cluster.stop()
        if failure:
            raise CommandError(f"{failure}; the cluster was shut down")
        cluster.say("stopped")

    def _announce(self, cluster: LocalCluster) -> None:
        cluster.say("demo chat (presence, recovery): "
                    + "  ".join(cluster.demo_urls))
        for node, url in zip(cluster.ws_nodes, cluster.ws_urls, strict=True):
            cluster.say(f"{node.name}: {url}")
        for node in cluster.nodes:
            cluster.say(f"metrics of {node.name}: {cluster.metrics_url(node)}")
        account = ensure_admin_account() if cluster.migrate else None
        if account is None:
            cluster.say(f"admin: {cluster.admin_url}")
        else:  # shown once: the database keeps only its hash
            cluster.say(f"admin: {cluster.admin_url}  user {account[0]!r}, password "
                        f"{account[1]!r} (created now; change it in the admin)")
        dev = cluster.development_settings()
        cluster.say(f"DJANGO_DEBUG={dev['DJANGO_DEBUG']}, DPS_ALLOW_ANONYMOUS="
                    f"{dev['DPS_ALLOW_ANONYMOUS']}" + (
                        "  (anonymous sockets are accepted; DPS_ALLOW_ANONYMOUS=0 refuses them)"
                        if dev["DPS_ALLOW_ANONYMOUS"] == "1" else ""))
        cluster.say(READY_LINE)

    def _emit(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()  # stdout is block-buffered under a pipe; the log must be live
