"""`StreamPipeline`: one stream's way through the engine.

The asyncio loop `submit`s decoded frames into the pipeline's slot (latest frame wins; a replaced
frame is counted as dropped). The device worker takes them, runs the current effect chain and
hands the result to `emit`, which must be safe to call from the worker thread. The chain is
swapped by replacing one reference, so a change lands between two frames, never inside one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av

from livegen.effects import EffectChain
from livegen.engine.governor import StreamLoad
from livegen.engine.stats import StreamStats
from livegen.flow.ratelog import RateLimitedLog
from livegen.flow.slot import FrameSlot

log = logging.getLogger("livegen.engine.worker")

BURST_S = 0.5


@dataclass(frozen=True, slots=True)
class InputFrame:
    frame: av.VideoFrame
    received_at: float  # time.perf_counter() when the frame reached the node (its first packet)


class StreamPipeline:
    def __init__(
        self,
        name: str,
        chain: EffectChain | None,
        emit: Callable[[av.VideoFrame], None],
        stats: StreamStats | None = None,
        max_fps: float | None = None,
    ):
        self.name = name
        self._max_fps = max_fps
        # Half a second of frames may arrive at once (a burst after a network stall, or the
        # decoder catching up); only a sustained excess over max_fps is dropped.
        self._burst = max(2.0, (max_fps or 0) * BURST_S)
        self._tokens = self._burst
        self._refilled = time.perf_counter()
        self.chain = chain
        self.emit = emit
        self.stats = stats or StreamStats()
        self.slot: FrameSlot[InputFrame] = FrameSlot()
        self.recent_ms = 0.0
        """Exponential average of this stream's processing time per frame (worker thread)."""
        self._retired: list[EffectChain] = []
        self._retired_lock = threading.Lock()
        self._index = 0
        self.load = StreamLoad()
        """The worker's account of this stream: its share, demand and shedding level."""
        self.error_log = RateLimitedLog(log)
        """Where the worker reports this stream's failing frames (once per interval)."""
        self._retunes: list[tuple[EffectChain, int, Any]] = []

    def bind(self, wake: Callable[[], None]) -> None:
        """Called by the worker that runs this pipeline, so a new frame wakes it."""
        self.slot = FrameSlot(on_put=wake)

    def submit(self, frame: av.VideoFrame, arrived_at: float | None = None, decode_ms: float | None = None) -> None:
        """A decoded frame; `arrived_at` (perf_counter) is when its first packet arrived and
        `decode_ms` how long it took to decode, if known."""
        if decode_ms is not None:
            self.stats.stages({"decode": decode_ms}, set())
        self.stats.frame_in()
        if self._max_fps is not None and not self._admit():
            self.stats.drop("fps_limit")
            return
        if self.slot.put(InputFrame(frame, arrived_at or time.perf_counter())) is not None:
            self.stats.drop("slot_replaced")

    def _admit(self) -> bool:
        """Token bucket at max_fps with room for a burst of BURST_S seconds of frames."""
        now = time.perf_counter()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._max_fps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def set_chain(self, chain: EffectChain | None) -> None:
        """Swap the chain (None: stop processing). The old one is closed by the worker later."""
        with self._retired_lock:
            old, self.chain = self.chain, chain
            if old is not None and old is not chain:
                self._retired.append(old)

    def retune(self, chain: EffectChain, changes: dict[int, Any]) -> None:
        """New parameters for some effects of `chain` ({index: params}), applied by the worker
        before the next frame, all together (see `Effect.retune`)."""
        with self._retired_lock:
            self._retunes += [(chain, index, params) for index, params in changes.items()]

    def apply_retunes(self) -> None:
        """Worker thread, between frames: apply pending parameter changes to the running chain."""
        with self._retired_lock:
            retunes, self._retunes = self._retunes, []
        for chain, index, params in retunes:
            if chain is self.chain:  # a chain swapped out meanwhile is closed, not retuned
                chain.effects[index].retune(params)

    def take_retired(self) -> list[EffectChain]:
        with self._retired_lock:
            retired, self._retired = self._retired, []
        return retired

    def next_index(self) -> int:
        self._index += 1
        return self._index - 1
