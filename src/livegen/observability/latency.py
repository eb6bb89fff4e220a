"""`LatencyWindow`: the last N samples of a duration, with percentiles; thread-safe, bounded."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

DEFAULT_WINDOW = 600  # samples (about 20 s at 30 fps)


class LatencyWindow:
    def __init__(self, size: int = DEFAULT_WINDOW):
        self._lock = threading.Lock()
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples.append(ms)

    def percentiles(self, *qs: float) -> dict[str, float | None]:
        with self._lock:
            samples = np.array(self._samples)
        names = [f"p{q:g}" for q in qs]
        if samples.size == 0:
            return dict.fromkeys(names)
        values = np.percentile(samples, qs)
        return {name: round(float(v), 2) for name, v in zip(names, values, strict=True)}

    def summary(self) -> dict[str, float | None]:
        return self.percentiles(50, 95)
