"""``python manage.py runcluster``: a whole local DPS cluster in one command, in any project.

A thin command-line face over :class:`topics.devtools.local_cluster.LocalCluster`; the orchestration
lives there so that tests and benchmarks start exactly the same cluster. The nodes run the
invoking project: its settings module (``DJANGO_SETTINGS_MODULE``), its ASGI application
(``settings.ASGI_APPLICATION``), in its manage.py directory, with a SECRET_KEY generated for
this cluster. Everything it writes is this user's only (umask 077), and the cluster is recorded
for ``dps_token`` and ``dps_publish`` run beside it (``topics.management.cluster_lookup``).
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from topics.devtools.admin_account import ensure_admin_account
from topics.devtools.cluster_files import (
    ADMIN_PASSWORD_FILE_NAME,
    forget_running,
    make_private_dir,
    record_running,
    tell_terminal,
    write_private,
)
from topics.devtools.cluster_plan import Project
from topics.devtools.local_cluster import (
    SERVERS,
    ClusterError,
    ClusterInterrupted,
    LocalCluster,
)
from topics.management.cluster_lookup import invoking_project_directory, project_state_dir

READY_LINE = "DPS cluster ready"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def invoking_project() -> Project:
    """The project of this process: its settings, its ASGI app, its manage.py directory."""
    return Project.from_settings(settings.SETTINGS_MODULE,
                                 getattr(settings, "ASGI_APPLICATION", None),
                                 invoking_project_directory(sys.argv[0], os.getcwd()))


class Command(BaseCommand):
    help = (
        "Start a local DPS cluster of this project: an embedded Redis per node, WS nodes "
        "(daphne) on consecutive ports and TS nodes (topic_server). A node or Redis that exits "
        "is restarted with backoff (--fail-fast: the cluster stops instead). Ctrl-C or SIGTERM "
        "stops everything."
    )
    # Node processes check their own configuration; this parent only orchestrates.
    requires_system_checks = ()
    requires_migrations_checks = False
    state_dir: Path | None = None  # where this project's running cluster is recorded

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
        os.umask(0o077)  # the database migrate creates, the Redis dirs, the files below
        try:
            project = invoking_project()
            cluster = LocalCluster(
                options["ws"], options["ts"], port=options["port"], redis=options["redis"],
                host=options["host"], server=options["server"], migrate=options["migrate"],
                emit=self._emit, supervise=not options["fail_fast"], project=project,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.state_dir = project_state_dir(project.directory, project.settings_module)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: cluster.request_stop())
        try:
            cluster.start(timeout=options["ready_timeout"])
            record_running(self.state_dir, cluster.files(), os.getpid())
            self._announce(cluster)
            failure = cluster.wait()
        except ClusterInterrupted:
            failure = None
        except ClusterError as exc:
            failure = str(exc)
        finally:
            cluster.say("stopping")
            forget_running(self.state_dir, os.getpid())
            cluster.stop()
        if failure:
            raise CommandError(f"{failure}; the cluster was shut down")
        cluster.say("stopped")

    def _announce(self, cluster: LocalCluster) -> None:
        plan = cluster.plan
        cluster.say("demo chat (presence, recovery): " + "  ".join(plan.demo_urls))
        for node, url in zip(cluster.ws_nodes, cluster.ws_urls, strict=True):
            cluster.say(f"{node.name}: {url}")
        for node in cluster.nodes:
            cluster.say(f"metrics of {node.name}: {plan.metrics_url(node)}")
        account = ensure_admin_account() if cluster.migrate else None
        if account is None:
            cluster.say(f"admin: {plan.admin_url}")
        else:
            cluster.say(f"admin: {plan.admin_url}  user {account[0]!r}, password "
                        f"{self._hand_over(*account)} (created now; change it in the admin)")
        if self.state_dir is not None:
            cluster.say(f"dps_token and dps_publish run beside this cluster use it (recorded "
                        f"in {self.state_dir})")
        dev = plan.development_settings()
        cluster.say(f"DJANGO_DEBUG={dev['DJANGO_DEBUG']}, DPS_ALLOW_ANONYMOUS="
                    f"{dev['DPS_ALLOW_ANONYMOUS']}" + (
                        "  (anonymous sockets are accepted; DPS_ALLOW_ANONYMOUS=0 refuses them)"
                        if dev["DPS_ALLOW_ANONYMOUS"] == "1" else ""))
        cluster.say(READY_LINE)

    def _hand_over(self, username: str, password: str) -> str:
        """Give the new admin password to the person at the terminal, never to stdout (often a
        log file): the terminal itself, else a 0600 file. Returns where it went."""
        if tell_terminal(f"[runcluster] admin password for {username!r}: {password}"):
            return "shown on the terminal (not in this output)"
        path = make_private_dir(self.state_dir) / ADMIN_PASSWORD_FILE_NAME
        write_private(path, password + "\n")
        return f"in {path} (0600)"

    def _emit(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()  # stdout is block-buffered under a pipe; the log must be live
