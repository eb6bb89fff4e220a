"""Per-stream counters, rates and latency percentiles, written by the engine and read by the API.

Writers are the asyncio loop (frames in) and the worker thread (frames out, latency); a lock keeps
snapshots consistent. Memory is bounded: rates and percentiles use fixed-size windows.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

from livegen.observability.latency import LatencyWindow
from livegen.observability.metrics import HistogramCounts, LatencyHistogram

RATE_WINDOW_S = 2.0


class _RateMeter:
    def __init__(self) -> None:
        self._stamps: deque[float] = deque(maxlen=512)

    def mark(self, now: float) -> None:
        self._stamps.append(now)

    def rate(self, now: float) -> float:
        recent = [t for t in self._stamps if now - t <= RATE_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], recent[-1] - recent[0])
        return (len(recent) - 1) / span if span > 0 else 0.0


class StreamStats:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_out = 0
        self.dropped: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        """Frames that went out unprocessed because an effect raised, by kind."""
        self.over_budget = 0
        self._in_rate = _RateMeter()
        self._out_rate = _RateMeter()
        self.processing_ms = LatencyWindow()
        self.stage_ms: dict[str, LatencyWindow] = {}
        self.notes: Counter[str] = Counter()
        self.node_ms = LatencyWindow()
        self.device_copies = LatencyWindow()
        """Host↔device copies per frame on a device-path worker (the picture up, the result down)."""
        # cumulative since the stream began, for Prometheus; the windows above serve the API
        self.processing_histogram = LatencyHistogram()
        self.node_histogram = LatencyHistogram()
        self.stage_histograms: dict[str, LatencyHistogram] = {}

    def frame_in(self) -> None:
        with self._lock:
            self.frames_in += 1
            self._in_rate.mark(self._clock())

    def input_fps(self) -> float:
        with self._lock:
            return self._in_rate.rate(self._clock())

    def count_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += count

    def frame_out(self, processing_ms: float, node_ms: float, over_budget: bool) -> None:
        """A processed frame left the engine: its processing time and time since it arrived."""
        with self._lock:
            self.frames_out += 1
            self._out_rate.mark(self._clock())
            self.processing_ms.add(processing_ms)
            self.node_ms.add(node_ms)
            self.processing_histogram.observe(processing_ms)
            self.node_histogram.observe(node_ms)
            self.over_budget += int(over_budget)

    def stages(self, timings_ms: dict[str, float], notes: set[str], copies: int | None = None) -> None:
        """One frame's time per effect, what it degraded or fell back on, and (on the device
        path) how many host↔device copies it took."""
        with self._lock:
            if copies is not None:
                self.device_copies.add(copies)
            for name, ms in timings_ms.items():
                self.stage_ms.setdefault(name, LatencyWindow()).add(ms)
                histogram = self.stage_histograms.get(name)
                if histogram is None:
                    histogram = self.stage_histograms[name] = LatencyHistogram()
                histogram.observe(ms)
            self.notes.update(notes)

    def stage_counts(self) -> dict[str, HistogramCounts]:
        """Each stage's histogram read now (for the metrics collector)."""
        with self._lock:
            histograms = list(self.stage_histograms.items())
        return {name: histogram.read() for name, histogram in histograms}

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            return {
                "fps_in": round(self._in_rate.rate(now), 2),
                "fps_out": round(self._out_rate.rate(now), 2),
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "dropped": dict(self.dropped),
                "errors": dict(self.errors),
                "over_budget": self.over_budget,
                "latency_ms": self.processing_ms.summary(),
                "node_latency_ms": self.node_ms.summary(),
                "stages_ms": {name: window.summary() for name, window in self.stage_ms.items()},
                "degraded": dict(self.notes),
                "device_copies_per_frame": self.device_copies.summary(),
            }

