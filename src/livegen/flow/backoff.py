"""Exponential backoff with full jitter, for everything that leaves the node and may fail for a
while (a platform's RTMP ingest, a WHIP server, object storage, a webhook).

Attempt n waits a uniformly random time in [0, min(cap, base·2ⁿ)] ("full jitter"): many nodes
retrying the same server spread out instead of arriving together. A success resets it.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(self, base_s: float = 1.0, cap_s: float = 30.0, rng: Callable[[], float] = random.random):
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base ({base_s}) <= cap ({cap_s})")
        self.base_s, self.cap_s = base_s, cap_s
        self._rng = rng
        self.attempt = 0

    def ceiling(self) -> float:
        """The longest the next wait may be."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        """The wait before the next attempt, and count it."""
        delay = self._rng() * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
