"""Prometheus series of the frame API: calls by method and final status, frames answered, and
the calls running now. `RpcMetrics` is recorded into by the servicer; `RpcCollector` adds the
gauge read at scrape time. Both belong to the app's registry (`api.metrics.NodeMetrics`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from livegen.observability.metrics import OwningCollector

METHODS = ("ProcessStream", "GenerateStream")
FRAME_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class RpcMetrics:
    def __init__(self) -> None:
        # registry=None: registered on the app's registry through `RpcCollector`
        self.calls = Counter(
            "livegen_grpc_calls", "Frame API calls that ended, by method and gRPC status code.",
            ["method", "code"], registry=None,
        )
        self.frames = Counter("livegen_grpc_frames", "Frames answered by the frame API, by method.", ["method"], registry=None)
        self.frame_seconds = Histogram(
            "livegen_grpc_frame_seconds",
            "Time from a frame's hand-over to the device worker to its result (waiting and processing), by method.",
            ["method"], buckets=FRAME_BUCKETS_S, registry=None,
        )

    def ended(self, method: str, code: str) -> None:
        self.calls.labels(method, code).inc()

    def frame(self, method: str, seconds: float) -> None:
        self.frames.labels(method).inc()
        self.frame_seconds.labels(method).observe(seconds)


class RpcCollector(OwningCollector):
    """`active()`: calls running now, by method."""

    def __init__(self, metrics: RpcMetrics, active: Callable[[], dict[str, int]]):
        super().__init__((metrics.calls, metrics.frames, metrics.frame_seconds), active)

    def gauges(self, reading: dict[str, int] | None) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("livegen_grpc_calls_active", "Frame API calls running now, by method.", labels=["method"])
        for method in METHODS:
            gauge.add_metric([method], (reading or {}).get(method, 0))
        yield gauge
