"""`JobLane`: frames that must all be processed, in order — a file being processed, a gRPC
client's stream — on the same device worker as the live streams, but below them.

Live streams drop frames rather than queue; a lane never drops one. The worker takes a lane's
frame only in a round where no live stream has a frame waiting, and one frame at a time, so a
live frame waits at most one lane frame. The lane is bounded too: its owner keeps at most
`depth` frames in flight, and `submit` refuses more (`LaneFull`) instead of queueing them.
Results come back as futures, set by the worker in the order the frames were submitted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import av

from livegen.effects import EffectChain
from livegen.observability.latency import LatencyWindow


class LaneFull(RuntimeError):
    """The owner submitted more than `depth` frames without waiting for results."""


class LaneClosed(RuntimeError):
    """The lane was closed (its job canceled, its client gone, or the worker stopping)."""


@dataclass
class LaneResult:
    frame: av.VideoFrame
    """The processed picture, with the input frame's pts and time base."""
    processing_ms: float
    """Time the worker spent on this frame."""
    waited_ms: float
    """Time the frame waited for the worker (behind live streams and earlier lane frames)."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Per effect, as for live streams' stats."""


class JobLane:
    def __init__(self, name: str, chain: EffectChain, depth: int = 4):
        if depth < 1:
            raise ValueError("a lane holds at least one frame")
        self.name = name
        self.chain = chain
        self.depth = depth
        self._lock = threading.Lock()
        self._pending: deque[tuple[av.VideoFrame, float, Future[LaneResult]]] = deque()
        self._in_flight = 0
        self._closed = False
        self._wake: Callable[[], None] = lambda: None
        self.frames_done = 0
        self.processing_ms = LatencyWindow()
        """Worker time per frame, recent window (for ETAs and stats)."""

    def bind(self, wake: Callable[[], None]) -> None:
        """Called by the worker that runs this lane, so a submitted frame wakes it."""
        self._wake = wake

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def submit(self, frame: av.VideoFrame) -> Future[LaneResult]:
        """Queue one frame (any thread); its future completes with a `LaneResult`, or with the
        exception the chain raised on it (the lane goes on with the next frame)."""
        future: Future[LaneResult] = Future()
        with self._lock:
            if self._closed:
                raise LaneClosed(f"lane {self.name} is closed")
            if self._in_flight >= self.depth:
                raise LaneFull(f"lane {self.name} already holds {self.depth} frames")
            self._in_flight += 1
            self._pending.append((frame, time.perf_counter(), future))
        self._wake()
        return future

    def take(self) -> tuple[av.VideoFrame, float, Future[LaneResult]] | None:
        """Worker thread: the oldest frame not yet processed."""
        with self._lock:
            return self._pending.popleft() if self._pending else None

    def finished(self, future: Future[LaneResult], result: LaneResult | None, error: BaseException | None) -> None:
        """Worker thread: one frame done (or failed); frees its place in the lane."""
        with self._lock:
            self._in_flight -= 1
            if result is not None:
                self.frames_done += 1
        if result is not None:
            self.processing_ms.add(result.processing_ms)
            future.set_result(result)
        else:
            future.set_exception(error or LaneClosed(f"lane {self.name} is closed"))

    def close(self) -> None:
        """No more frames; those not yet taken fail with `LaneClosed`. Idempotent."""
        with self._lock:
            self._closed = True
            pending, self._pending = list(self._pending), deque()
            self._in_flight -= len(pending)
        for _, _, future in pending:
            future.set_exception(LaneClosed(f"lane {self.name} is closed"))
