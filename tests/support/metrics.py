"""A node's /metrics, parsed with prometheus_client's own text parser."""
from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def node_metrics(url: str) -> dict[str, float]:
    """Every sample at ``url`` by name (labels dropped: one node per scrape)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples}
