"""The local cluster's plan (``topics.devtools.cluster_plan``), the settings its processes run
(``topics.devtools.cluster_settings``) and how commands find a running cluster
(``topics.management.cluster_lookup``): pure rules, no process started."""
from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import os
import sys
import types
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from topics.devtools.cluster_files import forget_running, record_running, write_private
from topics.devtools.cluster_plan import (
    CLUSTER_SETTINGS,
    PROJECT_SETTINGS_ENV,
    SECRET_FILE_ENV,
    Project,
    plan_cluster,
)
from topics.management.cluster_lookup import (
    RunningCluster,
    find_running,
    invoking_project_directory,
    project_state_dir,
    running_cluster_for,
)

MYSITE = Project(Path("/srv/mysite"), "mysite.settings", "mysite.asgi:application")


def counting_ports(start: int = 20000):
    ports = itertools.count(start)
    return lambda host: next(ports)


def plan(**kwargs):
    kwargs.setdefault("free_port", counting_ports())
    return plan_cluster(**kwargs)


def test_a_plan_names_its_nodes_ports_and_urls_without_running_anything() -> None:
    p = plan(ws=2, ts=2, port=9000, project=MYSITE)
    assert [(n.name, n.role, n.port, n.metrics_port) for n in p.nodes] == [
        ("ws-a", "ws", 9000, None), ("ws-b", "ws", 9001, None),
        ("ts-a", "ts", None, 20000), ("ts-b", "ts", None, 20001)]
    assert p.ws_urls == ["ws://127.0.0.1:9000/socket/websocket?vsn=2.0.0",
                         "ws://127.0.0.1:9001/socket/websocket?vsn=2.0.0"]
    assert p.demo_urls == ["http://127.0.0.1:9000/", "http://127.0.0.1:9001/"]
    assert p.metrics_url(p.node("ts-b")) == "http://127.0.0.1:20001/metrics"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.host = "0.0.0.0"  # type: ignore[misc]


def test_redis_urls_join_the_plan_as_a_new_value() -> None:
    p = plan(ws=1, ts=1)
    with pytest.raises(RuntimeError, match="ws-a's Redis has not been started"):
        p.cluster_config()
    started = p.with_redis({"ws-a": "redis://127.0.0.1:1/0", "ts-a": "redis://127.0.0.1:2/0"})
    assert started.cluster_config() == {"nodes": [
        {"name": "ws-a", "role": "ws", "redis": "redis://127.0.0.1:1/0"},
        {"name": "ts-a", "role": "ts", "redis": "redis://127.0.0.1:2/0"}]}
    assert not p.redis_urls  # the old plan is unchanged


def test_stand_in_nodes_are_listed_but_not_run() -> None:
    p = plan(ws=2, ts=1, port=9000, standins=2, redis="redis://h:1/0")
    assert [n.name for n in p.nodes] == ["ws-a", "ws-b", "ws-c", "ws-d", "ts-a"]
    assert [n.name for n in p.spawned_nodes] == ["ws-a", "ws-b", "ts-a"]
    assert len(p.ws_urls) == 2 and len(p.cluster_config()["nodes"]) == 5


def test_every_process_runs_the_project_settings_through_the_cluster_settings() -> None:
    base = {"DPS_NODE": "ws-z", "DPS_CLUSTER": "/elsewhere.json", "DPS_ALLOW_ANONYMOUS": "0",
            "DJANGO_SETTINGS_MODULE": "mysite.settings", "HOME": "/home/me"}
    p = plan(ws=1, ts=1, project=MYSITE, base_env=base)
    env = p.env_for(p.node("ts-a"), "/tmp/work")
    assert env["DJANGO_SETTINGS_MODULE"] == CLUSTER_SETTINGS
    assert env[PROJECT_SETTINGS_ENV] == "mysite.settings"
    assert env[SECRET_FILE_ENV] == "/tmp/work/secret_key"
    assert (env["DPS_NODE"], env["DPS_CLUSTER"]) == ("ts-a", "/tmp/work/cluster.json")
    assert env["DPS_ALLOW_ANONYMOUS"] == "0" and env["DJANGO_DEBUG"] == "1"  # explicit wins
    assert env["HOME"] == "/home/me"
    migrate_env = p.child_env("/tmp/work")
    assert "DPS_NODE" not in migrate_env and "DPS_CLUSTER" not in migrate_env
    assert p.development_settings() == {"DJANGO_DEBUG": "1", "DPS_ALLOW_ANONYMOUS": "0"}


def test_commands_run_the_project_asgi_app_and_django_itself() -> None:
    p = plan(ws=1, ts=1, project=MYSITE, server="uvicorn")
    assert p.command_for(p.node("ws-a"))[-1] == "mysite.asgi:application"
    assert p.command_for(p.node("ts-a"))[:4] == [sys.executable, "-m", "django", "topic_server"]
    assert p.migrate_command() == [sys.executable, "-m", "django", "migrate", "--noinput"]
    assert "--no-access-log" not in p.command_for(p.node("ws-a"))
    quiet = plan(ws=1, ts=0, project=MYSITE, server="uvicorn", quiet_servers=True)
    assert "--no-access-log" in quiet.command_for(quiet.node("ws-a"))


def test_the_project_comes_from_its_settings() -> None:
    project = Project.from_settings("mysite.settings", "mysite.asgi.application", Path("/p"))
    assert project.asgi_app == "mysite.asgi:application"
    assert Project.from_settings("s", "topics.asgi.application", Path("/p")).asgi_app == \
        "topics.asgi:application"
    for bad in (None, "", "application"):
        with pytest.raises(ValueError, match="ASGI_APPLICATION"):
            Project.from_settings("s", bad, Path("/p"))
    assert Project.repository_site().settings_module == "dps_site.settings"


def test_the_project_directory_is_that_of_manage_py_else_the_working_directory() -> None:
    assert invoking_project_directory("manage.py", "/srv/mysite") == Path("/srv/mysite")
    assert invoking_project_directory("/srv/mysite/manage.py", "/tmp") == Path("/srv/mysite")
    assert invoking_project_directory("/usr/lib/python3/django/__main__.py", "/srv/x") == \
        Path("/srv/x")


def test_each_project_and_settings_module_has_its_own_state_dir(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    a = project_state_dir(tmp_path / "a", "a.settings", env)
    assert a.parent == tmp_path / "dps" and a.name.startswith("a-")
    assert a != project_state_dir(tmp_path / "b", "a.settings", env)
    assert a != project_state_dir(tmp_path / "a", "a.other_settings", env)
    assert a == project_state_dir(tmp_path / "a", "a.settings", env)


def test_a_recorded_cluster_is_found_while_its_runcluster_runs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    files = RunningCluster(tmp_path / "cluster.json", tmp_path / "secret_key")
    write_private(files.cluster_file, "{}")
    write_private(files.secret_file, "k" * 60 + "\n")
    record = record_running(state, files, os.getpid())
    assert oct(record.stat().st_mode & 0o777) == "0o600" and (state.stat().st_mode & 0o777) == 0o700
    assert find_running(state) == files and files.secret_key() == "k" * 60
    forget_running(state, os.getpid() + 1)  # another runcluster's stop leaves ours
    assert find_running(state) == files
    forget_running(state, os.getpid())
    assert find_running(state) is None


def test_a_record_left_by_a_killed_runcluster_is_ignored(tmp_path: Path) -> None:
    files = RunningCluster(tmp_path / "cluster.json", tmp_path / "secret_key")
    write_private(files.cluster_file, "{}")
    write_private(files.secret_file, "k")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "running.json").write_text(json.dumps(
        {"cluster_file": str(files.cluster_file), "secret_file": str(files.secret_file),
         "pid": 2 ** 22 + 1}))  # above pid_max's default: no such process
    assert find_running(tmp_path / "state") is None


def test_an_explicit_cluster_file_brings_the_secret_beside_it(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text("{}")
    env = {"DPS_CLUSTER": str(tmp_path / "cluster.json"), "XDG_STATE_HOME": str(tmp_path)}
    assert running_cluster_for("s", env) is None  # a production cluster file: nothing to adopt
    (tmp_path / "secret_key").write_text("k")
    (tmp_path / "secret_key").chmod(0o644)
    cluster = running_cluster_for("s", env)
    assert cluster == RunningCluster(tmp_path / "cluster.json", tmp_path / "secret_key")
    with pytest.raises(ImproperlyConfigured, match="readable by others"):
        cluster.secret_key()


def test_cluster_settings_are_the_project_s_with_the_cluster_s_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = types.ModuleType("throwaway_project_settings")
    project.SECRET_KEY = "django-insecure-public"
    project.ROOT_URLCONF = "mysite.urls"
    project._private = "not a setting"
    monkeypatch.setitem(sys.modules, project.__name__, project)
    write_private(tmp_path / "secret_key", "generated-for-this-cluster\n")
    monkeypatch.setenv(PROJECT_SETTINGS_ENV, project.__name__)
    monkeypatch.setenv(SECRET_FILE_ENV, str(tmp_path / "secret_key"))
    monkeypatch.delitem(sys.modules, CLUSTER_SETTINGS, raising=False)
    settings = importlib.import_module(CLUSTER_SETTINGS)
    assert settings.SECRET_KEY == "generated-for-this-cluster"
    assert settings.ROOT_URLCONF == "mysite.urls" and not hasattr(settings, "_private")
    monkeypatch.delitem(sys.modules, CLUSTER_SETTINGS)
    monkeypatch.setenv(SECRET_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot read the cluster's key"):
        importlib.import_module(CLUSTER_SETTINGS)
