"""Issue 20 item 9: file modes of what runcluster writes (database, cluster file, key, Redis
files, state directory), whether the admin password appears in runcluster's output, and the mode
the docs install cluster.json with. Run under umask 022, as a usual shell."""
import os
import re
import stat
from pathlib import Path

from _probe import ROOT, Cluster, emit

os.umask(0o022)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode)) if path.exists() else "absent"


settings_text = (ROOT / "dps_site" / "settings.py").read_text()
database = None if "DPS_DATABASE" in settings_text else ROOT / "db.sqlite3"
if database is not None and database.exists():
    database.rename(database.with_suffix(".sqlite3.probe-backup"))  # a fresh database
try:
    with Cluster(ws=1, ts=1) as cluster:
        database = database or Path(cluster.env["DPS_DATABASE"])
        work = Path(cluster.cluster_file).parent
        log = cluster.log()
        figures = {"db.sqlite3": mode(database), "work_dir": mode(work),
                   "cluster.json": mode(Path(cluster.cluster_file)),
                   "work_files": {str(p.relative_to(work)): mode(p) for p in sorted(work.rglob("*"))
                                  if p.is_file()}}
        state = Path(cluster.env["XDG_STATE_HOME"])
        figures["state_files"] = {str(p.relative_to(state)): mode(p) for p in state.rglob("*")
                                  if p.is_file()}
        shown = re.search(r"user 'admin', password '([^']+)'", log)
        figures["password_in_log"] = bool(shown)
        password_file = next(state.rglob("admin-password"), None)
        if password_file is not None:
            password = password_file.read_text().strip()
            figures["password_file"] = mode(password_file)
            figures["password_in_log"] = password in log
finally:
    backup = ROOT / "db.sqlite3.probe-backup"
    if backup.exists():
        (ROOT / "db.sqlite3").unlink(missing_ok=True)
        backup.rename(ROOT / "db.sqlite3")
docs = {}
for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
    for found in re.findall(r"install -m (\d+)[^\n]*cluster\.json", doc.read_text()):
        docs.setdefault(doc.name, []).append(found)
figures["docs_install_cluster.json"] = docs
emit(figures)
