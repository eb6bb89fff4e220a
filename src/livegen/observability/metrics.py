"""Prometheus exposition of the node's streams, and the accumulators the hot path records into.

`LatencyHistogram` and `ByteRate` are cheap, thread-safe accumulators that live inside the
objects that own a measurement (`StreamStats`, the stream encoder). `NodeCollector` owns no
state: at scrape time it asks a narrow source for `StreamReading`s and turns them into metric
families, so a stream that has ended simply is not in the next scrape.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Upper bounds in milliseconds: fine around the 100 ms budget (where the p99 alert sits), coarse
# at both ends. 1 ms–500 ms is the range that matters; 1 s and +Inf catch stalls.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2.5, 5, 7.5, 10, 15, 20, 30, 40, 50, 65, 80, 100, 125, 150, 200, 300, 500, 1000,
)
BITRATE_WINDOW_S = 2.0


class HistogramCounts(NamedTuple):
    """A histogram read at one instant: cumulative counts per `LATENCY_BUCKETS_MS` bound (then
    +Inf, which equals `count`), and the sum of observations in seconds."""

    cumulative: tuple[int, ...]
    sum_s: float
    count: int


class LatencyHistogram:
    """Cumulative bucket counts of a duration since the owner was created (never reset, as
    Prometheus counters must not be). Observing is one bisect and two additions."""

    def __init__(self, bounds_ms: tuple[float, ...] = LATENCY_BUCKETS_MS):
        self._bounds = bounds_ms
        self._counts = [0] * (len(bounds_ms) + 1)
        self._sum_ms = 0.0
        self._lock = threading.Lock()

    def observe(self, ms: float) -> None:
        index = bisect_left(self._bounds, ms)  # le semantics: a value on a bound counts in it
        with self._lock:
            self._counts[index] += 1
            self._sum_ms += ms

    def read(self) -> HistogramCounts:
        with self._lock:
            counts, total_ms = list(self._counts), self._sum_ms
        running, cumulative = 0, []
        for count in counts:
            running += count
            cumulative.append(running)
        return HistogramCounts(tuple(cumulative), total_ms / 1000.0, running)


class ByteRate:
    """Bytes sent since creation and the rate over the last `BITRATE_WINDOW_S` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._recent: deque[tuple[float, int]] = deque(maxlen=1024)
        self.total = 0

    def add(self, nbytes: int) -> None:
        now = self._clock()
        with self._lock:
            self.total += nbytes
            self._recent.append((now, nbytes))

    def bits_per_second(self) -> float:
        now = self._clock()
        with self._lock:
            recent = sum(n for t, n in self._recent if now - t <= BITRATE_WINDOW_S)
        # a stream younger than the window would otherwise read low for its first seconds
        span = min(BITRATE_WINDOW_S, now - self._started)
        return 8.0 * recent / span if span > 0 else 0.0


@dataclass(frozen=True)
class QualityReading:
    """The latest quality sample of a stream; None where the sample could not measure it."""

    person_ssim: float | None
    flicker: float | None


@dataclass(frozen=True)
class StreamReading:
    """What the collector needs of one live stream, read at scrape time."""

    stream: str
    fps_in: float
    fps_out: float
    frames_in: int
    frames_out: int
    over_budget: int
    dropped: Mapping[str, int]
    degradations: Mapping[str, int]
    viewers: int
    slots: Mapping[str, int]
    """Frames waiting in each of the stream's latest-frame slots (0 or 1), by slot."""
    processing: HistogramCounts
    node_latency: HistogramCounts
    stages: Mapping[str, HistogramCounts]
    output: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """(bytes sent, bits/s now) by codec."""
    quality: QualityReading | None = None
    outputs: Sequence[Mapping[str, Any]] = ()
    """Each output's and recording's status (`relay.base.OutputStatus.as_json`)."""
    errors: Mapping[str, int] = field(default_factory=dict)
    """Frames that went out unprocessed because an effect raised, by kind."""
    shed_level: int = 0
    """What the stream sheds to stay within its share of the worker (engine.governor.LEVELS)."""


def _buckets(counts: HistogramCounts) -> list[tuple[str, float]]:
    bounds = [f"{ms / 1000.0:g}" for ms in LATENCY_BUCKETS_MS] + ["+Inf"]
    return list(zip(bounds, counts.cumulative, strict=True))


OUTPUT_STATES = ("connecting", "live", "retrying", "failed", "stopped")
UPLOAD_COUNTERS = (
    ("livegen_recording_uploads", "completed", "Recordings uploaded to object storage and verified."),
    ("livegen_recording_upload_failures", "failures", "Recording uploads that failed (the local file stays)."),
    ("livegen_recording_upload_retries", "retries", "Object-storage calls retried after a transient error."),
)


class NodeCollector(Collector):
    """Metric families of the node's streams and signalling errors, built at each scrape from
    `streams()` and `signalling_errors()` ({(endpoint, status): count})."""

    def __init__(
        self,
        streams: Callable[[], Iterable[StreamReading]],
        signalling_errors: Callable[[], Mapping[tuple[str, int], int]],
        uploads: Callable[[], Mapping[str, int] | None] = lambda: None,
    ):
        self._streams = streams
        self._signalling_errors = signalling_errors
        self._uploads = uploads
        """Recording upload counters ({"completed", "failures", "retries"}), None without storage."""

    def describe(self) -> Iterator[Metric]:
        # Names only (no samples), so a registry refuses a second collector that reuses one.
        yield from self._families([], {})

    def collect(self) -> Iterator[Metric]:
        yield from self._families(list(self._streams()), self._signalling_errors())
        uploads = self._uploads()
        if uploads is not None:
            for name, key, text in UPLOAD_COUNTERS:
                yield CounterMetricFamily(name, text, value=uploads[key])

    @staticmethod
    def _families(
        readings: list[StreamReading], errors: Mapping[tuple[str, int], int]
    ) -> Iterator[Metric]:
        s = ["stream"]
        streams = GaugeMetricFamily("livegen_streams", "Streams being published to this node.", len(readings))
        fps_in = GaugeMetricFamily("livegen_stream_input_fps", "Frames per second arriving (decoded).", labels=s)
        fps_out = GaugeMetricFamily("livegen_stream_output_fps", "Frames per second leaving the engine.", labels=s)
        frames_in = CounterMetricFamily(
            "livegen_stream_frames_received", "Decoded frames handed to the engine.", labels=s
        )
        frames_out = CounterMetricFamily(
            "livegen_stream_frames_processed", "Frames the engine processed and emitted.", labels=s
        )
        over_budget = CounterMetricFamily(
            "livegen_stream_frames_over_budget", "Processed frames that took longer than the frame budget.", labels=s
        )
        dropped = CounterMetricFamily(
            "livegen_stream_frames_dropped", "Frames dropped before reaching viewers, by reason.", labels=[*s, "reason"]
        )
        degradations = CounterMetricFamily(
            "livegen_stream_degradations",
            "Frames on which an effect degraded or fell back (mask_reused, background_fallback ...), by kind.",
            labels=[*s, "kind"],
        )
        errors_family = CounterMetricFamily(
            "livegen_stream_effect_errors",
            "Frames that went out unprocessed because an effect raised, by kind.",
            labels=[*s, "kind"],
        )
        shed_level = GaugeMetricFamily(
            "livegen_stream_shed_level",
            "What the stream sheds to stay within its share of the worker: 0 nothing, 1 effect quality, "
            "2 also half resolution, 3 also frame rate.",
            labels=s,
        )
        slot_depth = GaugeMetricFamily(
            "livegen_stream_slot_depth", "Frames waiting in a latest-frame slot (0 or 1).", labels=[*s, "slot"]
        )
        viewers = GaugeMetricFamily("livegen_stream_viewers", "WHEP viewers of the stream.", labels=s)
        out_bytes = CounterMetricFamily(
            "livegen_stream_output_bytes", "Encoded video bytes sent to viewers, by codec.", labels=[*s, "codec"]
        )
        bitrate = GaugeMetricFamily(
            "livegen_stream_output_bits_per_second",
            f"Encoded video bitrate over the last {BITRATE_WINDOW_S:g} s, by codec.",
            labels=[*s, "codec"],
        )
        processing = HistogramMetricFamily(
            "livegen_stream_processing_seconds", "Engine time per frame, all effects and conversions.", labels=s
        )
        node_latency = HistogramMetricFamily(
            "livegen_stream_node_latency_seconds",
            "Time from a frame's arrival at the node to the end of its processing.",
            labels=s,
        )
        stages = HistogramMetricFamily(
            "livegen_stream_stage_seconds",
            "Time per frame in one stage: an effect by name, convert_in/convert_out, encode.",
            labels=[*s, "stage"],
        )
        ssim = GaugeMetricFamily(
            "livegen_quality_person_ssim", "SSIM of the person region of the output against the input (sampled).",
            labels=s,
        )
        flicker = GaugeMetricFamily(
            "livegen_quality_flicker",
            "Mean change of the output between consecutive frames where the input is still, 0-1 (sampled).",
            labels=s,
        )
        o = [*s, "output", "kind"]
        output_state = GaugeMetricFamily(
            "livegen_output_state",
            "1 for the state each output or recording is in (connecting, live, retrying, failed, stopped).",
            labels=[*o, "state"],
        )
        output_bytes = CounterMetricFamily(
            "livegen_output_bytes", "Bytes an output pushed or a recording wrote.", labels=o
        )
        output_reconnects = CounterMetricFamily(
            "livegen_output_reconnects", "Times an output went to retrying after a failure.", labels=o
        )
        output_bitrate = GaugeMetricFamily(
            "livegen_output_bits_per_second", f"An output's bitrate over the last {BITRATE_WINDOW_S:g} s.", labels=o
        )
        for r in readings:
            for out in r.outputs:
                labels = [r.stream, out["id"], out["kind"]]
                for state in OUTPUT_STATES:
                    output_state.add_metric([*labels, state], 1.0 if out["state"] == state else 0.0)
                output_bytes.add_metric(labels, out["bytes"])
                output_reconnects.add_metric(labels, out["reconnects"])
                output_bitrate.add_metric(labels, out["bitrate_bps"])
        for r in readings:
            name = [r.stream]
            fps_in.add_metric(name, r.fps_in)
            fps_out.add_metric(name, r.fps_out)
            frames_in.add_metric(name, r.frames_in)
            frames_out.add_metric(name, r.frames_out)
            over_budget.add_metric(name, r.over_budget)
            for reason, count in sorted(r.dropped.items()):
                dropped.add_metric([r.stream, reason], count)
            for kind, count in sorted(r.degradations.items()):
                degradations.add_metric([r.stream, kind], count)
            for kind, count in sorted(r.errors.items()):
                errors_family.add_metric([r.stream, kind], count)
            shed_level.add_metric(name, r.shed_level)
            for slot, depth in sorted(r.slots.items()):
                slot_depth.add_metric([r.stream, slot], depth)
            viewers.add_metric(name, r.viewers)
            for codec, (sent, bps) in sorted(r.output.items()):
                out_bytes.add_metric([r.stream, codec], sent)
                bitrate.add_metric([r.stream, codec], bps)
            processing.add_metric(name, _buckets(r.processing), r.processing.sum_s)
            node_latency.add_metric(name, _buckets(r.node_latency), r.node_latency.sum_s)
            for stage, counts in sorted(r.stages.items()):
                stages.add_metric([r.stream, stage], _buckets(counts), counts.sum_s)
            if r.quality is not None and r.quality.person_ssim is not None:
                ssim.add_metric(name, r.quality.person_ssim)
            if r.quality is not None and r.quality.flicker is not None:
                flicker.add_metric(name, r.quality.flicker)
        signalling = CounterMetricFamily(
            "livegen_signalling_errors",
            "WHIP (publish) and WHEP (view) requests answered with an error status.",
            labels=["endpoint", "status"],
        )
        for (endpoint, status), count in sorted(errors.items()):
            signalling.add_metric([endpoint, str(status)], count)
        yield from (
            streams, fps_in, fps_out, frames_in, frames_out, over_budget, dropped, degradations, slot_depth,
            viewers, out_bytes, bitrate, processing, node_latency, stages, ssim, flicker, signalling,
            output_state, output_bytes, output_reconnects, output_bitrate, errors_family, shed_level,
        )


class EngineCollector(Collector):
    """The device worker's load: its capacity after overload shedding, and the in-node latency
    p95 that steers it; `read()` gives (capacity ratio, p95 ms)."""

    def __init__(self, read: Callable[[], tuple[float, float]]):
        self._read = read

    def describe(self) -> Iterator[Metric]:
        yield from self._families(1.0, 0.0)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(*self._read())

    @staticmethod
    def _families(capacity: float, latency_p95_ms: float) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "livegen_engine_capacity_ratio",
            "Share of the worker's configured capacity in use after overload shedding (1: no overload).",
            capacity,
        )
        yield GaugeMetricFamily(
            "livegen_engine_node_latency_p95_seconds",
            "In-node latency p95 over the governor's last step, all streams.",
            latency_p95_ms / 1000.0,
        )


class OwningCollector(Collector):
    """Series a part of the node records into (counters, histograms made with `registry=None`,
    listed in `owned`) together with gauges computed at scrape time: `gauges(read())`, and
    `gauges(None)` when the registry asks what the collector describes."""

    def __init__(self, owned: Sequence[Any], read: Callable[[], Any]):
        self._owned = tuple(owned)
        self._read = read

    def gauges(self, reading: Any) -> Iterator[Metric]:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        yield from self.gauges(None)
        for metric in self._owned:
            yield from metric.collect()

    def collect(self) -> Iterator[Metric]:
        yield from self.gauges(self._read())
        for metric in self._owned:
            yield from metric.collect()
