"""Prometheus series of the node's cluster membership, read from its `ClusterRegistry` at
scrape time (it owns the counts)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from livegen.cluster.registry import ClusterRegistry


class ClusterCollector(Collector):
    def __init__(self, cluster: ClusterRegistry):
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        cluster = self._cluster
        yield GaugeMetricFamily(
            "livegen_cluster_redis_up", "1 when the node's last Redis call succeeded, else 0 (serving locally).",
            1.0 if cluster.reachable else 0.0,
        )
        yield CounterMetricFamily(
            "livegen_cluster_errors", "Redis calls of the cluster registry that failed or timed out.", cluster.errors
        )
        redirects = CounterMetricFamily(
            "livegen_cluster_redirects", "WHIP and WHEP requests redirected (307) to another node.", labels=["endpoint"]
        )
        for endpoint in ("whip", "whep"):
            redirects.add_metric([endpoint], cluster.redirects[endpoint])
        yield redirects
