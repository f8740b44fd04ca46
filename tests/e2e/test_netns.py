"""The multi-host harness (tests/support/netns.py): namespaces, links, cuts, clean teardown."""
from __future__ import annotations

import subprocess

import pytest

from tests.support.netns import NetnsLab
from topics.devtools.embedded_redis import find_redis_server

pytestmark = pytest.mark.e2e


def namespaces_named(prefix: str) -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix)]


def test_hosts_reach_each_other_until_their_link_is_cut_and_again_once_healed() -> None:
    with NetnsLab() as lab:
        ts, ws, other = lab.host("ts-a"), lab.host("ws-a"), lab.host("ws-b")
        url = ts.start_redis(find_redis_server())
        assert url.endswith(f"@{ts.address}:6400/0") and url.startswith("redis://:")
        assert ws.can_connect(ts.address, 6400) and other.can_connect(ts.address, 6400)
        assert not ws.can_connect("127.0.0.1", 6400)  # each host has its own loopback

        lab.cut(ws, ts)
        assert not ws.can_connect(ts.address, 6400)
        assert other.can_connect(ts.address, 6400)  # only that link is cut
        lab.heal(ws, ts)
        assert ws.can_connect(ts.address, 6400)
        prefix = lab.prefix
        assert len(namespaces_named(prefix)) == 4  # hub + 3 hosts
    assert namespaces_named(prefix) == []
    assert all(p.poll() is not None for p in lab.processes)


def test_a_failing_test_still_tears_everything_down() -> None:
    with pytest.raises(RuntimeError, match="boom"), NetnsLab() as lab:
        host = lab.host("ts-a")
        sleeper = host.popen(["sleep", "600"])
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert namespaces_named(lab.prefix) == []
