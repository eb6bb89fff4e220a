"""Prometheus series of file jobs. `JobMetrics` holds the counters and the duration histogram
the runner records into; `JobsCollector` adds the gauges read from the runner at scrape time
(queue depth, jobs by state). The app registers the collector on its own registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from livegen.jobs.records import STATES
from livegen.observability.metrics import OwningCollector

DURATION_BUCKETS_S = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class JobMetrics:
    def __init__(self) -> None:
        # registry=None: these belong to the app's registry through `JobsCollector`, not the global one
        self.duration = Histogram(
            "livegen_job_duration_seconds",
            "Time a job's last attempt took, from its start to its end, by final state.",
            ["state"], buckets=DURATION_BUCKETS_S, registry=None,
        )
        self.failures = Counter(
            "livegen_job_failures", "Jobs that ended failed, by kind of error (transient, permanent).",
            ["kind"], registry=None,
        )
        self.retries = Counter(
            "livegen_job_retries", "Job attempts that failed with a transient error and were queued again.",
            registry=None,
        )
        self.webhooks = Counter(
            "livegen_job_webhook_tries", "Webhook delivery tries, by outcome (delivered, retried, failed).",
            ["outcome"], registry=None,
        )

    def finished(self, state: str, seconds: float) -> None:
        self.duration.labels(state).observe(seconds)

    def failed(self, kind: str) -> None:
        self.failures.labels(kind).inc()

    def retried(self) -> None:
        self.retries.inc()

    def webhook_outcome(self, outcome: str) -> None:
        self.webhooks.labels(outcome).inc()


class JobsCollector(OwningCollector):
    """`counts()`: jobs by state now (the runner's, refreshed on every change)."""

    def __init__(self, metrics: JobMetrics, counts: Callable[[], Mapping[str, int]]):
        super().__init__((metrics.duration, metrics.failures, metrics.retries, metrics.webhooks), counts)

    def gauges(self, reading: Mapping[str, int] | None) -> Iterator[Metric]:
        counts = reading or {}
        yield GaugeMetricFamily("livegen_jobs_queue_depth", "Jobs queued, waiting to run.", counts.get("queued", 0))
        by_state = GaugeMetricFamily("livegen_jobs", "Jobs in the store, by state.", labels=["state"])
        for state in STATES:
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
