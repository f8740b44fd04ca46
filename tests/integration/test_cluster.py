"""Cluster configuration: one source, clear errors, passwords never shown."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from channel_layer.cluster import (
    ClusterConfigError,
    current_node_name,
    load_cluster,
    parse_cluster,
    redact_url,
)
from channel_layer.startup import check_reachable
from tests.support.processes import ROOT


def nodes(*specs):
    return {"nodes": [{"name": n, "role": r, "redis": u} for n, r, u in specs]}


GOOD = nodes(("ws-a", "ws", "redis://127.0.0.1:7001/0"), ("ts-a", "ts", "redis://127.0.0.1:7002/0"))


def test_no_configuration_is_the_embedded_cluster():
    cluster = load_cluster(None, env={})
    assert cluster.embedded
    assert [n.role for n in cluster.nodes] == ["ws", "ts"]
    assert current_node_name(cluster, env={}) == "local"


def test_file_named_by_dps_cluster_wins_over_the_setting(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(GOOD))
    cluster = load_cluster({"nodes": []}, env={"DPS_CLUSTER": str(path)})
    assert [n.name for n in cluster.ws_nodes] == ["ws-a"]
    assert [n.name for n in cluster.ts_nodes] == ["ts-a"]
    assert current_node_name(cluster, env={"DPS_NODE": "ts-a"}) == "ts-a"
    assert current_node_name(cluster, env={}) is None  # a send-only client


def test_setting_is_used_without_a_file():
    assert load_cluster(GOOD, env={}).node("ts-a").redis_url == "redis://127.0.0.1:7002/0"


def test_unknown_node_is_named_with_the_known_ones():
    cluster = parse_cluster(GOOD, "test")
    with pytest.raises(ClusterConfigError, match=r"unknown node 'ws-z'.*ws-a, ts-a"):
        current_node_name(cluster, env={"DPS_NODE": "ws-z"})


def test_duplicate_names_are_refused():
    spec = nodes(("ws-a", "ws", "redis://h:1/0"), ("ws-a", "ts", "redis://h:2/0"))
    with pytest.raises(ClusterConfigError, match="duplicate node name 'ws-a'"):
        parse_cluster(spec, "test")


@pytest.mark.parametrize("url", ["http://h:1/0", "redis://:pw@h:notaport/0", "redis:///0", "", 5])
def test_malformed_urls_are_refused(url):
    spec = nodes(("ws-a", "ws", url), ("ts-a", "ts", "redis://h:1/0"))
    with pytest.raises(ClusterConfigError) as info:
        parse_cluster(spec, "test")
    assert "pw" not in str(info.value)


@pytest.mark.parametrize("spec, message", [
    ({"nodes": "x"}, "'nodes' list"),
    ([], "'nodes' list"),
    (nodes(("ws.a", "ws", "redis://h:1/0")), "node name"),
    (nodes(("ws-a", "xx", "redis://h:1/0")), "role"),
    (nodes(("ws-a", "ws", "redis://h:1/0")), "at least one 'ts'"),
])
def test_shape_errors(spec, message):
    with pytest.raises(ClusterConfigError, match=message):
        parse_cluster(spec, "test")


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ClusterConfigError, match="cannot read"):
        load_cluster(env={"DPS_CLUSTER": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ClusterConfigError, match="not valid JSON"):
        load_cluster(env={"DPS_CLUSTER": str(bad)})


def test_redaction():
    assert redact_url("redis://user:secret@host:6380/1") == "redis://user:***@host:6380/1"
    assert redact_url("redis://:secret@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host:6380/0") == "redis://host:6380/0"


def test_unreachable_redis_is_reported_with_the_password_redacted():
    cluster = parse_cluster(nodes(("ws-a", "ws", "redis://:hunter2@127.0.0.1:1/0"),
                                  ("ts-a", "ts", "redis://127.0.0.1:1/0")), "test")
    with pytest.raises(ClusterConfigError) as info:
        check_reachable(cluster, timeout=0.5)
    assert "ws-a" in str(info.value) and "redis://:***@127.0.0.1:1/0" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_reachable_cluster_passes(redis_factory):
    url = redis_factory().url
    check_reachable(parse_cluster(nodes(("ws-a", "ws", url), ("ts-a", "ts", url)), "test"))


@pytest.mark.parametrize("node, message", [
    ("ws-z", "unknown node 'ws-z'"),
    ("ws-a", "cannot reach the Redis of node ws-a at redis://:***@127.0.0.1:1/0"),
])
def test_processes_refuse_to_start_with_a_clear_message(tmp_path, node, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(nodes(("ws-a", "ws", "redis://:hunter2@127.0.0.1:1/0"),
                                     ("ts-a", "ts", "redis://:hunter2@127.0.0.1:1/0"))))
    env = {"DPS_CLUSTER": str(path), "DPS_NODE": node, "PATH": "/usr/bin:/bin"}
    ws = subprocess.run([sys.executable, "-c", "import dps_site.asgi"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=30)
    assert ws.returncode != 0 and message in ws.stderr and "hunter2" not in ws.stderr
    env["DPS_NODE"] = "ts-a" if node == "ws-a" else node
    ts = subprocess.run([sys.executable, "manage.py", "topic_server"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=30)
    assert ts.returncode != 0 and "hunter2" not in ts.stderr
    assert ("unknown node" in ts.stderr) if node == "ws-z" else ("cannot reach" in ts.stderr)
