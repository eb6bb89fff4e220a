"""`LoadGovernor`: how the device worker shares its time between streams, and sheds work when
the node is overloaded instead of letting frames queue.

**Fair share.** The worker may be busy `engine.worker_load` of every second (on a CPU node the
rest is for decoding, encoding and the network). A stream's demand is its processing time per
frame at full quality times its input frame rate. When the demands do not fit, work is taken
from the heaviest streams first (streams of about the same weight alike): the others keep all
they ask for, whatever their neighbours do, and the heavy ones split what is left, max-min
fairly (`allocate`).

**Shedding, per stream.** A stream whose demand is over its share sheds its own work, one level
at a time (one change per `STEP_S` at most), and never anyone else's:

1. `degrade`: effects skip optional work (reuse the last mask, skip a refinement) — the frame's
   `over_budget` flag;
2. `half_resolution`: also the picture is processed at half width and height, then scaled back;
3. `frame_rate`: also frames are processed only as often as the share pays for; the others are
   dropped (counted as `shed`).

It climbs back a level when what the lower level cost would fit in 80 % of its share, or, with
room to spare, after `PROBE_S` at a level — `QUICK_PROBE_S` when it uses under half its share —
(that cost may have been measured on a busier machine; `frame_rate` and `half_resolution` do
the same work per frame, so that one is always fresh).

**Overload.** How long processed frames waited is watched (in-node latency less the frame's own
processing: decoding on a busy CPU, the slot, other streams' turns): when its p95 over the last
`WINDOW_STEPS` steps is above half of `engine.budget_ms` (sustained: a few late frames after a
hiccup of the machine are under the p95 of two seconds), the worker's capacity shrinks by 30 %,
which the heaviest streams absorb, down to their floor, and the window starts again, so the
next decision sees what the shedding did. Streams that ask for no more than their share (every
stream, when none is heavy) pay only to keep the budget: capacity shrinks below what they use
only while the waits' p95 is over `LIGHT_SHED` of the budget. Below a quarter of the budget,
waits let capacity grow back by 10 % per step. Levels and capacity are in each stream's
stats (`load`) and in the metrics.

Everything here runs on the worker thread, except `reading`, which only reads numbers.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

STEP_S = 0.5
"""How often shares are recomputed and a stream may change level."""
PROBE_S = 30.0
"""After this long at a level, a stream with room to spare tries the level above in quality
(for half a second: if that still costs too much it comes straight back)."""
QUICK_PROBE_S = 5.0
"""... after this long already when it uses under half its share (a level entered during a
start-up or a slow moment of the machine, whose full cost was measured then)."""
LEVELS = ("full", "degrade", "half_resolution", "frame_rate")
UP_MARGIN = 1.0  # demand over this fraction of the share climbs a level
DOWN_MARGIN = 0.8  # the lower level's demand under this fraction of the share comes back down
FLOOR_SHARE = 0.1  # of an equal part: what a heavy stream keeps however loaded the node
PEER_RATIO = 0.9  # streams within 10 % of the heaviest shed with it
CAPACITY_FLOOR = 0.25  # of the configured capacity: overload never starves the worker further
WAIT_HIGH = 0.5  # of the budget: frames waiting longer than this (p95 over a step) shrink capacity
WAIT_LOW = 0.25  # of the budget: below it capacity grows back
WINDOW_STEPS = 4  # the steps whose waits the capacity follows (2 s)
MIN_WINDOW_STEPS = 2  # of them, at least this many since capacity last shrank
LIGHT_SHED = 0.8  # of the budget: waits (p95) over which streams within their share shed too
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


def heavy_streams(natural: list[float], capacity: float) -> set[int]:
    """Which streams shed: the heaviest (with those within `PEER_RATIO` of it), then the next,
    until the full-quality demands of the rest fit in `capacity`."""
    heavy: set[int] = set()
    for index in sorted(range(len(natural)), key=lambda i: natural[i], reverse=True):
        if sum(natural[i] for i in range(len(natural)) if i not in heavy) <= capacity:
            break
        heavy |= {i for i in range(len(natural)) if natural[i] >= PEER_RATIO * natural[index]}
    return heavy


def allocate(natural: list[float], capacity: float, full_capacity: float) -> list[float]:
    """Each stream's share of `capacity` (worker ms per second).

    Work is taken from the heaviest first: while the streams' full-quality (`natural`) demands
    do not fit, the heaviest stream — with every stream within `PEER_RATIO` of it, so that equal
    streams are treated alike — joins the heavy group. The other streams are protected: each may
    use its whole demand, however loaded the node, so a light stream never sheds because of a
    heavy neighbour. The heavy group splits what the protected streams leave, max-min fairly,
    never below `FLOOR_SHARE` of an equal part of the full capacity."""
    count = len(natural)
    if count == 0:
        return []
    floor = FLOOR_SHARE * full_capacity / count
    heavy = heavy_streams(natural, capacity)
    held = sum(natural[i] for i in range(count) if i not in heavy)
    shares = [0.0] * count
    spare = max(0.0, capacity - held - floor * len(heavy))
    for i in range(count):
        if i not in heavy:  # its demand, and room to grow into while the node has it
            shares[i] = natural[i] + (spare if not heavy else 0.0)
    group = sorted(heavy)
    for i, share in zip(group, fair_shares([natural[i] for i in group], max(0.0, capacity - held)), strict=True):
        shares[i] = max(share, floor)
    return shares


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class LoadGovernor:
    def __init__(self, budget_ms: float, worker_load: float = 0.9, enabled: bool = True, clock=time.perf_counter):
        self.budget_ms = budget_ms
        self.max_capacity_ms = 1000.0 * worker_load
        self.capacity_ms = self.max_capacity_ms
        self.enabled = enabled
        self._clock = clock
        self._planned_at = clock()
        self._latencies: list[float] = []
        self._waits: list[float] = []
        self._light_bound = 0.0
        self._window: deque[list[float]] = deque(maxlen=WINDOW_STEPS)
        """The waits of the last steps (one list per step)."""
        self.latency_p95_ms = 0.0
        """In-node latency p95 over the last step, all streams together."""
        self.wait_p95_ms = 0.0
        """In-node latency less the frame's own processing (decode, slot, other streams' turns),
        p95 over the last step: what overload adds, and what steers the capacity."""

    @property
    def capacity(self) -> float:
        """The worker's capacity now, as a fraction of the configured one (1.0: no overload)."""
        return self.capacity_ms / self.max_capacity_ms

    # ---- per step -------------------------------------------------------------------------
    def due(self, now: float | None = None) -> bool:
        """Whether a step has passed since the last `plan` (the worker asks before it gathers
        every stream's input rate, which costs a lock and a scan per stream)."""
        return (self._clock() if now is None else now) - self._planned_at >= STEP_S

    def plan(self, loads: list[tuple[StreamLoad, float]]) -> None:
        """Every `STEP_S`: adjust capacity to the latency seen, divide it among the streams
        ((load, input fps) each) and move each stream at most one level."""
        now = self._clock()
        if not self.due(now):
            return
        self._planned_at = now
        natural = [(load.cost(0) or 0.0) * fps for load, fps in loads]
        heavy = heavy_streams(natural, self.capacity_ms)
        # what overload may take before the light streams pay: the heavy ones down to their floor
        self._light_bound = 0.0 if not heavy else (
            sum(n for i, n in enumerate(natural) if i not in heavy)
            + len(heavy) * FLOOR_SHARE * self.max_capacity_ms / len(natural)
        )
        self._adjust_capacity()
        for load, fps in loads:
            load.fps_in = fps
            load.demand_ms = (load.cost(load.level) or 0.0) * fps
        shares = allocate(natural, self.capacity_ms, self.max_capacity_ms)
        for (load, _), share in zip(loads, shares, strict=True):
            load.share_ms = share
            if self.enabled:
                self._move(load, now)

    def _adjust_capacity(self) -> None:
        samples, self._latencies = self._latencies, []
        waits, self._waits = self._waits, []
        if len(samples) < 3:
            return
        self.latency_p95_ms, self.wait_p95_ms = _p95(samples), _p95(waits)
        if not self.enabled:
            return
        # A stream whose own frames are slow pays for that itself (its share and level); what
        # the capacity answers for is the time frames wait: decoding on a saturated CPU, the
        # slot, other streams' turns.
        self._window.append(waits)
        if len(self._window) < MIN_WINDOW_STEPS:
            return
        waited = _p95([wait for step in self._window for wait in step])
        # shrinking further would take from streams that ask for no more than their share (no
        # stream is heavy, or the heavy ones are at their floor): only to keep the budget
        light_pay = not self._light_bound or self.capacity_ms <= self._light_bound
        if waited > (LIGHT_SHED if light_pay else WAIT_HIGH) * self.budget_ms:
            shrunk = max(CAPACITY_FLOOR * self.max_capacity_ms, self.capacity_ms * SHRINK)
            if self.capacity_ms > self._light_bound:  # the heavy streams first, to their floor
                shrunk = max(shrunk, self._light_bound)
            self.capacity_ms = shrunk
            self._window.clear()
        elif waited < WAIT_LOW * self.budget_ms:
            self.capacity_ms = min(self.max_capacity_ms, self.capacity_ms * GROW)

    def _move(self, load: StreamLoad, now: float) -> None:
        if now - load.changed_at < STEP_S:
            return
        if load.level < len(LEVELS) - 1 and load.demand_ms > UP_MARGIN * load.share_ms:
            load.level += 1
        elif load.level > 0:
            below = load.cost_ms[load.level - 1]
            fits = below is None or below * load.fps_in < DOWN_MARGIN * load.share_ms
            # what a lower level cost was measured when the stream was last there, perhaps on a
            # busy machine long ago: with room to spare, try it again now and then
            waited = now - load.changed_at
            probe = (waited >= PROBE_S and load.demand_ms < DOWN_MARGIN * load.share_ms) or (
                waited >= QUICK_PROBE_S and load.demand_ms < 0.5 * load.share_ms
            )
            if fits or probe:
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

    def charge(self, load: StreamLoad, processing_ms: float, node_ms: float, lent_ms: float = 0.0) -> None:
        """A frame was processed at the stream's current level; `lent_ms` of its in-node time
        the worker spent on lighter streams' frames between its effects: that is the price of
        their turns, which the heavy stream pays, not a wait that overload should answer."""
        level = load.level
        # `frame_rate` does `half_resolution`'s work per frame: one measure keeps both fresh
        for measured in (level, level - 1) if level == len(LEVELS) - 1 else (level,):
            old = load.cost_ms[measured]
            load.cost_ms[measured] = processing_ms if old is None else old + (processing_ms - old) * COST_WEIGHT
        if level == len(LEVELS) - 1:
            load.credit_ms -= processing_ms
        if len(self._latencies) < MAX_SAMPLES:
            self._latencies.append(node_ms)
            self._waits.append(max(0.0, node_ms - processing_ms - lent_ms))
