"""Django's SQLite backend, except that a database file it creates is 0600, whatever the
umask: the file holds session keys and password hashes (SQLite gives its journal and WAL files
the database file's mode). An existing file keeps the mode its owner gave it."""
from __future__ import annotations

import os
from typing import Any

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        name = str(conn_params.get("database", ""))
        # Django opens every database as a URI: only "file:..." names are URIs (the test
        # database in memory is one), others are paths.
        if name and name != ":memory:" and not name.startswith("file:") and not os.path.exists(name):
            try:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass  # another process created it first: its mode stands
        return super().get_new_connection(conn_params)
