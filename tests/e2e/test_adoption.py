"""The README's "Add DPS to your project", literally, in a stock ``django-admin startproject``.

The wheel is built from this checkout and installed (``pip install --target``) outside it; the
project gets exactly the contract's edits, taken from the README itself (two apps and
``ASGI_APPLICATION`` in settings.py, one include in urls.py), plus one view of its own that
calls ``topics.api.broadcast``. Then, with
``manage.py runcluster`` in that project: the project's admin index lists the DPS pages, the
cluster page has DPS's stylesheet and both WS nodes up (Chromium), the view's broadcast and
``dps_publish`` reach a phoenix.js client on the other node, and ``manage.py check`` is clean,
but names a deliberately wrong setting.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.admin_session import Browser
from tests.support.phoenix_driver import PhoenixDriver
from tests.support.waiting import wait_until
from topics.devtools.embedded_redis import free_port_block

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
READY_LINE = "DPS cluster ready"
USER, PASSWORD = "operator", "adoption-test-password-1"
TOPIC = "topics:adoption"
TIMEOUT = 60.0

# The project's own view (not part of the contract): a publish from Django code.
VIEW = '''
from django.http import JsonResponse
from topics.api import broadcast


def shout(request):
    broadcast("topics:adoption", "message", {"from": "view", "text": request.GET["text"]})
    return JsonResponse({"sent": True})
'''


def build_wheel(work: Path) -> Path:
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("channel_layer", "topics"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", "-w", str(work / "dist"), str(source)], cwd=work)
    return next((work / "dist").glob("dps-*.whl"))


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None,
        expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == expect, (command, result.stdout[-3000:], result.stderr[-3000:])
    return result


def readme_block(step: str) -> str:
    """The first code block after the README's "**<step>" in "Add DPS to your project"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Add DPS to your project", 1)[1]
    after = section.split(f"**{step}", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def apply_the_contract(project: Path) -> None:
    """The README's edits, as written there: its settings lines appended to settings.py, its
    URL line added to urlpatterns (with the import its comment names)."""
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + readme_block("2. `settings.py`"))
    route = readme_block("3. `urls.py`").strip()
    assert route.startswith('path("dps/", include("topics.urls")),'), route
    urls = project / "mysite" / "urls.py"
    admin_route = "    path('admin/', admin.site.urls),\n"  # as startproject writes it
    text = urls.read_text()
    assert "from django.urls import path\n" in text and admin_route in text
    text = text.replace("from django.urls import path\n",
                        "from django.urls import include, path\n\nfrom mysite import views\n")
    text = text.replace(admin_route, f"{admin_route}    {route}\n")
    # The project's own view, and its own route to it (not part of the contract):
    (project / "mysite" / "views.py").write_text(VIEW)
    text = text.replace(admin_route, admin_route + '    path("shout/", views.shout),\n')
    urls.write_text(text)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    work = tmp_path_factory.mktemp("adoption")
    wheel = build_wheel(work)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert {"topics/static/dps/dps.css", "topics/templates/admin/dps/cluster.html"} <= names
    assert any(n.startswith("topics/static/dps/vendor/phoenix") for n in names)
    runtime = [line for line in metadata.splitlines()
               if line.startswith("Requires-Dist:") and "extra ==" not in line]
    for tooling in ("pytest", "playwright", "matplotlib", "hypothesis", "py-spy", "numpy"):
        assert not any(tooling in line for line in runtime), runtime
    target = work / "site-packages"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check",
         "--target", str(target), str(wheel)], cwd=work)
    project = work / "project"
    project.mkdir()
    run([sys.executable, "-m", "django", "startproject", "mysite", str(project)], cwd=work)
    apply_the_contract(project)
    # Only the wheel's copy on the path: never the checkout (the test runs from it).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DPS_", "DJANGO_")) and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    found = run([sys.executable, "-c", "import topics; print(topics.__file__)"], project, env)
    assert found.stdout.startswith(str(target)), found.stdout
    yield project, env


def manage(project: Path, env: dict[str, str], *args: str, expect: int = 0,
           extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run([sys.executable, "manage.py", *args], project, {**env, **(extra or {})}, expect)


def test_manage_py_check_is_clean_and_names_a_wrong_setting(project):
    directory, env = project
    assert "no issues" in manage(directory, env, "check").stdout
    wrong = directory / "mysite" / "settings_wrong.py"
    wrong.write_text("from mysite.settings import *  # noqa\n"
                     'DPS_MAX_CONNECTIONS = "many"\nDPS_IDLE_TIMOUT = 30\n'
                     'DPS_LAYER = {"node_timeout": "ten"}\n')
    failed = manage(directory, env, "check", "--settings", "mysite.settings_wrong", expect=1)
    report = failed.stderr
    assert "DPS_MAX_CONNECTIONS: (dps.E002) expected a positive integer, not 'many'" in report
    assert "DPS_IDLE_TIMOUT: (dps.E001) unknown DPS setting; did you mean DPS_IDLE_TIMEOUT?" in report
    assert "DPS_LAYER: (dps.E004) node_timeout must be a number > 0, not 'ten'" in report
    assert "Traceback" not in report


@pytest.fixture(scope="module")
def cluster(project) -> Iterator[tuple[list[str], Path, dict[str, str]]]:
    directory, env = project
    manage(directory, env, "migrate", "--noinput")
    manage(directory, env, "createsuperuser", "--noinput", "--username", USER,
           "--email", "operator@example.com", extra={"DJANGO_SUPERUSER_PASSWORD": PASSWORD})
    port = free_port_block(2)
    proc = subprocess.Popen([sys.executable, "manage.py", "runcluster", "--port", str(port),
                             "--fail-fast"], cwd=directory, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not any(READY_LINE in line for line in log):
            assert proc.poll() is None, "runcluster exited:\n" + "".join(log[-40:])
            assert time.monotonic() < deadline, "runcluster not ready:\n" + "".join(log[-40:])
            try:
                log.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        yield [f"http://127.0.0.1:{port + i}" for i in range(2)], directory, env
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_the_projects_admin_shows_the_styled_dps_pages(cluster, tmp_path):
    from playwright.sync_api import sync_playwright

    (base, _), _, _ = cluster
    shots = Path(os.environ.get("DPS_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/admin/login/?next=/admin/")
        page.fill("#id_username", USER)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")
        # The project's own index (its Users and Groups), with DPS as one more app.
        assert page.locator("a:text('Users')").count() == 1
        assert page.locator("caption a:text('DPS')").count() == 1
        page.screenshot(path=str(shots / "adoption-index.png"), full_page=True)

        page.click("a:text('Cluster: nodes and ring')")
        page.wait_for_url("**/admin/dps/cluster/")

        def both_ws_nodes_up() -> bool:
            page.reload()
            return page.locator("tr.dps-node.dps-up[data-node^='ws-']").count() == 2

        wait_until(both_ws_nodes_up, TIMEOUT, "both WS nodes up on the cluster page")
        # dps.css applied (from the wheel, through the project's static files): the ring's
        # arcs are 18 px wide, an SVG stroke's default is 1 px.
        width = page.eval_on_selector(".dps-arcs", "e => getComputedStyle(e).strokeWidth")
        assert width == "18px", width
        page.screenshot(path=str(shots / "adoption-cluster.png"), full_page=True)
        browser.close()


def test_the_projects_view_and_dps_publish_reach_a_client_on_the_other_node(cluster):
    (first, second), directory, env = cluster
    token = manage(directory, env, "dps_token", USER).stdout.strip()
    with PhoenixDriver() as js:
        js.connect("reader", url=second.replace("http", "ws") + "/socket",
                   params={"token": token})
        js.join("reader", TOPIC)
        staff = Browser(first)
        status, _ = staff.get("/shout/?text=hello")
        assert status == 200
        wait_until(lambda: any(body.get("text") == "hello"
                               for _, body in js.received("reader", TOPIC)),
                   TIMEOUT, "the view's broadcast at the other node's client")
        published = manage(directory, env, "dps_publish", TOPIC, "message", '{"text": "cli"}')
        assert f"published message to {TOPIC}" in published.stdout
        wait_until(lambda: any(body.get("text") == "cli"
                               for _, body in js.received("reader", TOPIC)),
                   TIMEOUT, "dps_publish's broadcast at the client")
    metrics = urllib.request.urlopen(f"{first}/dps/metrics", timeout=10).read().decode()
    assert "dps_" in metrics
