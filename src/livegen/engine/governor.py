"""`LoadGovernor`: how the device worker shares its time between streams, and sheds work when
the node is overloaded instead of letting frames queue.

**Fair share.** The worker may be busy `engine.worker_load` of every second (on a CPU node the
rest is for decoding, encoding and the network). Each stream's budget is an equal part of that.
A stream whose demand at full quality (its processing time per frame times its input frame
rate) is within its budget is protected: whatever its neighbours do, it keeps its budget. The
streams over budget split what the protected ones leave, max-min fairly (`allocate`).

**Shedding, per stream.** A stream whose demand is over its share sheds its own work, one level
at a time (one change per `STEP_S` at most), and never anyone else's:

1. `degrade`: effects skip optional work (reuse the last mask, skip a refinement) — the frame's
   `over_budget` flag;
2. `half_resolution`: also the picture is processed at half width and height, then scaled back;
3. `frame_rate`: also frames are processed only as often as the share pays for; the others are
   dropped (counted as `shed`).

It climbs back a level when what the lower level cost would fit in 80 % of its share.

**Overload.** The in-node latency of every processed frame is watched: when the p95 over the
last `STEP_S` is above 80 % of `engine.budget_ms`, the worker's capacity shrinks by 30 %, which
the streams over budget absorb first (protected streams are cut only when they alone exceed
it); below half the budget it grows back by 10 % per step. Levels and capacity are in each stream's stats (`load`) and in the metrics.

Everything here runs on the worker thread, except `reading`, which only reads numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

STEP_S = 0.5
"""How often shares are recomputed and a stream may change level."""
LEVELS = ("full", "degrade", "half_resolution", "frame_rate")
UP_MARGIN = 1.0  # demand over this fraction of the share climbs a level
DOWN_MARGIN = 0.8  # the lower level's demand under this fraction of the share comes back down
FLOOR_SHARE = 0.1  # of a budget: what a stream over its budget keeps however loaded the node
CAPACITY_FLOOR = 0.25  # of the configured capacity: overload never starves the worker further
LATENCY_HIGH = 0.8  # of the budget: above it (p95 over a step) capacity shrinks
LATENCY_LOW = 0.5  # of the budget: below it capacity grows back
SHRINK, GROW = 0.7, 1.1
MAX_SAMPLES = 4096  # in-node latencies kept per step
COST_WEIGHT = 0.2  # of the newest frame in a level's running cost average


@dataclass
class StreamLoad:
    """One stream's account with the governor."""

    level: int = 0
    share_ms: float = float("inf")
    """Worker milliseconds per second this stream may use now."""
    demand_ms: float = 0.0
    """Worker milliseconds per second it would use at its current level."""
    cost_ms: list[float | None] = field(default_factory=lambda: [None] * len(LEVELS))
    """Running average of the processing time per frame at each level (None: not yet seen)."""
    credit_ms: float = 0.0
    """At the `frame_rate` level: worker time earned and not yet spent."""
    credited_at: float = 0.0
    fps_in: float = 0.0
    shed_frames: int = 0
    changed_at: float = 0.0

    @property
    def scale(self) -> float:
        """Of the picture's width and height that the chain processes."""
        return 0.5 if self.level >= 2 else 1.0

    @property
    def degrade(self) -> bool:
        return self.level >= 1

    def cost(self, level: int) -> float | None:
        known = [c for c in self.cost_ms[: level + 1] if c is not None]
        # never measured at this level: assume the cheapest level below it that was
        return self.cost_ms[level] if self.cost_ms[level] is not None else (min(known) if known else None)

    def as_json(self) -> dict[str, object]:
        return {
            "level": self.level,
            "shedding": LEVELS[self.level],
            "share_ms_per_s": None if self.share_ms == float("inf") else round(self.share_ms, 1),
            "demand_ms_per_s": round(self.demand_ms, 1),
            "scale": self.scale,
            "shed_frames": self.shed_frames,
        }


def fair_shares(demands: list[float], capacity: float) -> list[float]:
    """Max-min fair division of `capacity` among `demands`: the smallest demands are met in
    full while they fit under an equal split of what is left; the rest share it equally."""
    shares = [0.0] * len(demands)
    left, remaining = capacity, sorted(range(len(demands)), key=lambda i: demands[i])
    while remaining:
        equal = left / len(remaining)
        index = remaining[0]
        if demands[index] > equal:
            for i in remaining:
                shares[i] = equal
            break
        shares[index] = demands[index]
        left -= demands[index]
        remaining.pop(0)
    return shares


def allocate(natural: list[float], current: list[float], capacity: float, full_capacity: float) -> list[float]:
    """Each stream's share of `capacity` (worker ms per second).

    A stream's budget is an equal part of the full capacity. Streams whose `natural` demand
    (what they ask at full quality) is within it are protected: their share is the whole budget,
    so a neighbour can never push them to shed. The others split what the protected streams use
    now (`current`) leaves, max-min fairly by their natural demands, and never get less than
    `FLOOR_SHARE` of a budget. Only when the protected streams alone need more than `capacity`
    (every stream is small and there are too many) are they cut too, max-min among themselves."""
    count = len(natural)
    if count == 0:
        return []
    budget = full_capacity / count
    protected = [i for i in range(count) if natural[i] <= budget]
    others = [i for i in range(count) if natural[i] > budget]
    held = sum(current[i] for i in protected)
    shares = [0.0] * count
    if held > capacity:
        for i, share in zip(protected, fair_shares([current[i] for i in protected], capacity), strict=True):
            shares[i] = share
    else:
        for i in protected:
            shares[i] = budget
    rest = max(0.0, capacity - held)
    for i, share in zip(others, fair_shares([natural[i] for i in others], rest), strict=True):
        shares[i] = max(share, FLOOR_SHARE * budget)
    return shares


class LoadGovernor:
    def __init__(self, budget_ms: float, worker_load: float = 0.9, enabled: bool = True, clock=time.perf_counter):
        self.budget_ms = budget_ms
        self.max_capacity_ms = 1000.0 * worker_load
        self.capacity_ms = self.max_capacity_ms
        self.enabled = enabled
        self._clock = clock
        self._planned_at = clock()
        self._latencies: list[float] = []
        self.latency_p95_ms = 0.0
        """In-node latency p95 over the last step, all streams together."""

    @property
    def capacity(self) -> float:
        """The worker's capacity now, as a fraction of the configured one (1.0: no overload)."""
        return self.capacity_ms / self.max_capacity_ms

    # ---- per step -------------------------------------------------------------------------
    def plan(self, loads: list[tuple[StreamLoad, float]]) -> None:
        """Every `STEP_S`: adjust capacity to the latency seen, divide it among the streams
        ((load, input fps) each) and move each stream at most one level."""
        now = self._clock()
        if now - self._planned_at < STEP_S:
            return
        self._planned_at = now
        self._adjust_capacity()
        for load, fps in loads:
            load.fps_in = fps
            load.demand_ms = (load.cost(load.level) or 0.0) * fps
        natural = [(load.cost(0) or 0.0) * fps for load, fps in loads]
        shares = allocate(natural, [load.demand_ms for load, _ in loads], self.capacity_ms, self.max_capacity_ms)
        for (load, _), share in zip(loads, shares, strict=True):
            load.share_ms = share
            if self.enabled:
                self._move(load, now)

    def _adjust_capacity(self) -> None:
        samples, self._latencies = self._latencies, []
        if len(samples) < 3:
            return
        samples.sort()
        self.latency_p95_ms = samples[min(len(samples) - 1, int(0.95 * len(samples)))]
        if not self.enabled:
            return
        if self.latency_p95_ms > LATENCY_HIGH * self.budget_ms:
            self.capacity_ms = max(CAPACITY_FLOOR * self.max_capacity_ms, self.capacity_ms * SHRINK)
        elif self.latency_p95_ms < LATENCY_LOW * self.budget_ms:
            self.capacity_ms = min(self.max_capacity_ms, self.capacity_ms * GROW)

    def _move(self, load: StreamLoad, now: float) -> None:
        if now - load.changed_at < STEP_S:
            return
        if load.level < len(LEVELS) - 1 and load.demand_ms > UP_MARGIN * load.share_ms:
            load.level += 1
        elif load.level > 0:
            below = load.cost_ms[load.level - 1]
            if below is None or below * load.fps_in < DOWN_MARGIN * load.share_ms:
                load.level -= 1
            else:
                return
        else:
            return
        load.changed_at = load.credited_at = now
        load.credit_ms = 0.0

    # ---- per frame ------------------------------------------------------------------------
    def admit(self, load: StreamLoad) -> bool:
        """Whether the stream's next frame is processed (False: shed it)."""
        if load.level < len(LEVELS) - 1:
            return True
        now = self._clock()
        # earned at the share's rate since the last frame; at most two frames' worth is kept
        cap = 2.0 * (load.cost(load.level) or 0.0)
        load.credit_ms = min(load.credit_ms + load.share_ms * (now - load.credited_at), cap)
        load.credited_at = now
        if load.credit_ms > 0.0:
            return True
        load.shed_frames += 1
        return False

    def charge(self, load: StreamLoad, processing_ms: float, node_ms: float) -> None:
        """A frame was processed at the stream's current level."""
        level = load.level
        old = load.cost_ms[level]
        load.cost_ms[level] = processing_ms if old is None else old + (processing_ms - old) * COST_WEIGHT
        if level == len(LEVELS) - 1:
            load.credit_ms -= processing_ms
        if len(self._latencies) < MAX_SAMPLES:
            self._latencies.append(node_ms)
