"""The files a local cluster writes, each for this user only (0600 from creation, directories
0700): the cluster file holds Redis URLs, the secret file the cluster's ``SECRET_KEY``, the
admin password file a password, and the record of the running cluster in the project's state
directory that the commands run beside it read (``topics.management.cluster_lookup``)."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from topics.management.cluster_lookup import RUNNING_FILE_NAME, RunningCluster

ADMIN_PASSWORD_FILE_NAME = "admin-password"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by this user only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        file.write(text)


def new_secret_key() -> str:
    """A random SECRET_KEY for one cluster (Django's own keys have about 300 bits too)."""
    return secrets.token_urlsafe(50)


def make_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def record_running(state_dir: Path, cluster: RunningCluster, pid: int) -> Path:
    """Record ``cluster`` (run by process ``pid``) as this project's running cluster."""
    path = make_private_dir(state_dir) / RUNNING_FILE_NAME
    write_private(path, json.dumps({"cluster_file": str(cluster.cluster_file),
                                    "secret_file": str(cluster.secret_file), "pid": pid}))
    return path


def forget_running(state_dir: Path, pid: int) -> None:
    """Remove the record, if it is still the one process ``pid`` wrote."""
    path = state_dir / RUNNING_FILE_NAME
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def tell_terminal(text: str) -> bool:
    """Write ``text`` to the controlling terminal (not to stdout, which may be a log file);
    False when the process has none."""
    try:
        fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        return False
    with os.fdopen(fd, "w") as tty:
        tty.write(text + "\n")
    return True
