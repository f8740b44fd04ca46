"""The metrics' exposition: every name the Grafana dashboard queries is one a node exports."""
from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from channel_layer.memory_transport import MemoryTransport
from channel_layer.topic_server import TopicServer
from tests.support.inproc import cluster_of
from topics.operator.prometheus_export import TopicServerCollector, WsNodeCollector, registry_for, render

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dps-dashboard.json"


def _exported(collector) -> set[str]:
    body, content_type = render(registry_for(collector))
    assert content_type.startswith("text/plain")
    return {sample.name for family in text_string_to_metric_families(body.decode())
            for sample in family.samples}


def test_the_dashboard_queries_only_exported_metrics(redis_url):
    server = TopicServer(cluster_of({"ws-a": redis_url, "ts-a": redis_url}), "ts-a",
                         MemoryTransport())
    exported = _exported(WsNodeCollector(None)) | _exported(TopicServerCollector(server))
    queried = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\bdps_[a-z_]+", target["expr"]))
    assert queried and queried <= exported, queried - exported
