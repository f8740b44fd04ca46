"""Issue 20 item 14: the TLS settings block of docs/security.md (after <!-- check-deploy -->),
loaded as a settings module, through `manage.py check --deploy` with a real key and hosts."""
import os
import re
import secrets
import subprocess
import tempfile
from pathlib import Path

from _probe import PY, ROOT, emit

doc = ROOT / "docs" / "security.md"
text = doc.read_text() if doc.exists() else ""
block = re.search(r"<!-- check-deploy -->\s*```python\n(.*?)```", text, re.S)
env = {**os.environ, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
       "DJANGO_ALLOWED_HOSTS": "app.example.com", "DJANGO_DEBUG": "0"}
env.pop("DPS_CLUSTER", None)
figures = {"docs_block_found": bool(block)}
if block:
    folder = Path(tempfile.mkdtemp(prefix="dps-probe-deploy-"))
    (folder / "production_settings.py").write_text(block.group(1))
    env.update(PYTHONPATH=str(folder), DJANGO_SETTINGS_MODULE="production_settings")
else:
    env["DJANGO_SETTINGS_MODULE"] = "dps_site.settings"
    figures["settings"] = "dps_site.settings (no block in the docs)"
done = subprocess.run([PY, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                      capture_output=True, text=True, timeout=120)
output = done.stdout + done.stderr
figures.update(returncode=done.returncode,
               warnings=sorted(set(re.findall(r"\((security\.W\d+|dps\.\w+)\)", output))),
               last_line=output.strip().splitlines()[-1] if output.strip() else "")
emit(figures)
