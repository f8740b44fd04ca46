"""``manage.py soak`` end to end, briefly: faults restarted by supervision, nothing lost."""
from __future__ import annotations

import pytest

from topics.devtools.soak import soak

pytestmark = pytest.mark.e2e


def test_a_short_soak_kills_and_restarts_a_topic_server_and_a_ws_node() -> None:
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line)  # pytest shows it when the test fails: supervision's account of the run

    report = soak(0.3, say=say)
    assert [f.split(" at ")[0] for f in report.faults] == ["SIGKILL ts-a", "SIGKILL ws-a"]
    for node in ("ts-a", "ws-a"):
        assert any(f"{node} exited with exit code -9 (SIGKILL)" in line for line in lines)
    exits = [line for line in lines if " exited with " in line]
    assert len(exits) == 2, exits  # no process exited but the two killed
    assert report.published_ok > 500 and report.expected > 1000
    assert report.stayers_dropped == 0, report.lines()
    assert (report.duplicated, report.out_of_order) == (0, 0), report.lines()
    # A SIGKILLed topic server loses what Redis had pushed to it and it had not handled (the
    # README's delivery guarantees): a handful of messages at most, never a stream.
    assert report.lost <= report.expected // 100, report.lines()
    assert report.churn["joins"] > 20 and report.churn["aborted"] > 0
    assert all(rss["start"] and rss["end"] for rss in report.rss_kib.values())
