"""How a command finds the local cluster (``runcluster``) of its project, to use it.

``runcluster`` (``topics.devtools``) records the cluster it runs in its project's *state
directory*, ``$XDG_STATE_HOME/dps/<project>-<digest>/`` (``~/.local/state`` when unset), one per
manage.py directory and settings module: ``running.json`` (0600) names the cluster file, the
file holding the cluster's generated SECRET_KEY (0600) and runcluster's pid; it is removed when
the cluster stops. :func:`adopt_running_cluster` is what ``dps_token`` and ``dps_publish`` call:
with ``DPS_CLUSTER`` set, the secret file beside that cluster file (if there is one); otherwise
the cluster recorded for this project, if its runcluster still runs. They then sign with the
cluster's key and publish into its cluster file with no extra environment. Without a local
cluster nothing changes.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

RUNNING_FILE_NAME = "running.json"
SECRET_FILE_NAME = "secret_key"  # beside the cluster file, in runcluster's work directory


def invoking_project_directory(argv0: str, cwd: str) -> Path:
    """Where the invoking command's project lives: the directory of its ``manage.py``, else
    (``python -m django ...``, ``django-admin ...``) its working directory."""
    if os.path.basename(argv0) == "manage.py":
        return Path(cwd, argv0).resolve().parent
    return Path(cwd).resolve()


def project_state_dir(project_dir: Path, settings_module: str,
                      env: Mapping[str, str] = os.environ) -> Path:
    """Where runcluster records the cluster of the project in ``project_dir`` run with
    ``settings_module`` (not created here)."""
    base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(f"{project_dir.resolve()}\0{settings_module}".encode()).hexdigest()
    return base / "dps" / f"{project_dir.resolve().name}-{digest[:12]}"


def is_private(path: Path) -> bool:
    """Whether ``path`` belongs to this user and no one else may read or write it."""
    info = path.stat()
    return info.st_uid == os.geteuid() and not stat.S_IMODE(info.st_mode) & 0o077


@dataclass(frozen=True)
class RunningCluster:
    """A local cluster as the commands beside it see it."""

    cluster_file: Path
    secret_file: Path

    def secret_key(self) -> str:
        if not is_private(self.secret_file):
            raise ImproperlyConfigured(f"{self.secret_file} is readable by others or not yours: "
                                       "refusing to sign with it")
        return self.secret_file.read_text().strip()


def find_running(state_dir: Path) -> RunningCluster | None:
    """The cluster recorded in ``state_dir``, if its runcluster still runs."""
    try:
        record = json.loads((state_dir / RUNNING_FILE_NAME).read_text())
        pid = int(record["pid"])
        cluster = RunningCluster(Path(record["cluster_file"]), Path(record["secret_file"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # killed without its clean-up: its cluster is gone too
    except PermissionError:
        pass  # alive, another user's pid now: the file checks below still apply
    return cluster if cluster.cluster_file.exists() and cluster.secret_file.exists() else None


def running_cluster_for(settings_module: str, env: Mapping[str, str] = os.environ,
                        argv0: str | None = None, cwd: str | None = None) -> RunningCluster | None:
    """The local cluster a command of this project is pointed at: the one beside
    ``$DPS_CLUSTER`` when that is a runcluster's, else the one recorded for this project."""
    explicit = env.get("DPS_CLUSTER")
    if explicit:
        secret = Path(explicit).parent / SECRET_FILE_NAME
        return RunningCluster(Path(explicit), secret) if secret.exists() else None
    project_dir = invoking_project_directory(argv0 or sys.argv[0], cwd or os.getcwd())
    return find_running(project_state_dir(project_dir, settings_module, env))


def adopt_running_cluster() -> RunningCluster | None:
    """Point this process at its project's local cluster, if one runs: ``DPS_CLUSTER`` names
    its cluster file and ``settings.SECRET_KEY`` is its key. For ``dps_token`` and
    ``dps_publish``; call it before the channel layer is first used."""
    from django.conf import settings

    cluster = running_cluster_for(settings.SETTINGS_MODULE)
    if cluster is None:
        return None
    settings.SECRET_KEY = cluster.secret_key()
    os.environ["DPS_CLUSTER"] = str(cluster.cluster_file)
    return cluster


