"""Fair sharing of the device worker and overload shedding (engine/governor.py, the worker)."""

from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest
import torch

from livegen.effects import EffectChain
from livegen.effects.base import Effect, Frame
from livegen.engine.governor import (
    LEVELS,
    STEP_S,
    LoadGovernor,
    StreamLoad,
    allocate,
    fair_shares,
)
from livegen.engine.pipeline import StreamPipeline
from livegen.engine.worker import DeviceWorker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fair_shares_meet_small_demands_and_split_the_rest():
    assert fair_shares([100.0, 2000.0], 900.0) == [100.0, 800.0]
    assert fair_shares([600.0, 600.0], 900.0) == [450.0, 450.0]
    assert fair_shares([50.0, 100.0, 5000.0, 5000.0], 1000.0) == [50.0, 100.0, 425.0, 425.0]
    assert fair_shares([], 900.0) == []
    shares = fair_shares([10.0, 20.0], 900.0)
    assert shares == [10.0, 20.0]  # under capacity: everyone gets what it asks


def test_work_is_taken_from_the_heaviest_stream_first():
    # a 600 ms/s stream beside a 2000 ms/s one on 900: the light one keeps all it asks for
    assert allocate([600.0, 2000.0], 900.0, 900.0) == [600.0, 300.0]
    # overload cut capacity to 700: still the heavy one absorbs it, down to its floor (45)
    assert allocate([600.0, 2000.0], 700.0, 900.0) == [600.0, 100.0]
    assert allocate([600.0, 2000.0], 500.0, 900.0) == [250.0, 250.0]  # both heavy now
    # streams of about the same weight shed alike; a light third one keeps its demand
    assert allocate([600.0] * 3, 600.0, 900.0) == [200.0] * 3
    assert allocate([200.0, 450.0, 460.0], 900.0, 900.0) == [200.0, 350.0, 350.0]
    # everything fits: nobody is heavy, and each may grow into what is spare
    assert allocate([100.0, 200.0], 900.0, 900.0) == [700.0, 800.0]
    assert allocate([], 900.0, 900.0) == []


def _run(governor: LoadGovernor, clock: Clock, streams: dict[str, tuple[StreamLoad, float, dict[int, float]]],
         seconds: float) -> dict[str, int]:
    """Simulate `seconds` at 30 fps per stream: each frame costs `costs[level]` ms; returns the
    frames each stream got processed."""
    processed = dict.fromkeys(streams, 0)
    frames = int(seconds * 30)
    for _ in range(frames):
        clock.now += 1 / 30
        governor.plan([(load, fps) for load, fps, _ in streams.values()])
        for name, (load, _, costs) in streams.items():
            if governor.admit(load):
                governor.charge(load, costs[load.level], node_ms=costs[load.level] + 5)
                processed[name] += 1
    return processed


def test_a_stream_over_its_share_sheds_its_own_work_and_not_the_others():
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, worker_load=0.9, clock=clock)
    bystander, noisy = StreamLoad(), StreamLoad()
    streams = {
        "bystander": (bystander, 30.0, {0: 12.0, 1: 12.0, 2: 12.0, 3: 12.0}),
        # 40 ms a frame in full, 35 degraded, 12 at half resolution: 1200 ms/s wanted
        "noisy": (noisy, 30.0, {0: 40.0, 1: 35.0, 2: 25.0, 3: 25.0}),
    }
    processed = _run(governor, clock, streams, 10.0)
    assert bystander.level == 0 and processed["bystander"] == 300  # never shed, every frame
    assert noisy.level == len(LEVELS) - 1  # climbed to frame-rate shedding
    # what the noisy stream got is about its share (900 - 360 ms/s) at 25 ms a frame
    rate = processed["noisy"] / 10.0
    assert 14 <= rate <= 26, rate
    assert noisy.shed_frames > 0
    assert noisy.as_json()["shedding"] == "frame_rate" and noisy.as_json()["scale"] == 0.5


def test_a_stream_comes_back_when_its_neighbour_leaves():
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, worker_load=0.9, clock=clock)
    a, b = StreamLoad(), StreamLoad()
    costs = {0: 20.0, 1: 18.0, 2: 8.0, 3: 8.0}  # 600 ms/s each in full: 1200 > 900
    _run(governor, clock, {"a": (a, 30.0, costs), "b": (b, 30.0, costs)}, 6.0)
    assert a.level > 0 and b.level > 0  # both over an equal share (450): both shed, equally
    _run(governor, clock, {"a": (a, 30.0, costs)}, 6.0)
    assert a.level == 0  # alone again, 600 < 0.8 * 900: back to full quality


def test_a_stale_cost_does_not_keep_a_stream_shed():
    # measured at level 2 during a busy start-up (40 ms); now frames cost 10 ms and there is room
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, clock=clock)
    load = StreamLoad(level=3, cost_ms=[45.0, 42.0, 40.0, 10.0])
    for _ in range(int(75 / STEP_S)):
        clock.now += STEP_S
        for _ in range(15):
            if governor.admit(load):
                governor.charge(load, 10.0, node_ms=12.0)
        governor.plan([(load, 30.0)])
    assert load.level == 0, load
    assert load.cost_ms[2] < 15.0  # the level-2 cost was refreshed by the level-3 frames


def test_a_stream_degraded_during_start_up_comes_back_within_seconds():
    # degraded while the machine was slow (its full-quality frames then cost 40 ms: 1200 ms/s);
    # now degraded frames cost 8 ms (240 ms/s of 900): far under its share, it tries full quality
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, clock=clock)
    load = StreamLoad(level=1, cost_ms=[40.0, 8.0, None, None], changed_at=clock.now)
    for _ in range(int(8 / STEP_S)):
        clock.now += STEP_S
        for _ in range(15):
            governor.charge(load, 12.0 if load.level == 0 else 8.0, node_ms=14.0)
        governor.plan([(load, 30.0)])
    assert load.level == 0, load  # 360 ms/s at full quality: it stays there
    assert load.cost_ms[0] < 20.0


def test_overload_shrinks_capacity_and_recovers():
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, clock=clock)
    load = StreamLoad()
    for _ in range(4):
        for _ in range(10):
            governor.charge(load, 10.0, node_ms=150.0)  # frames wait 140 ms: over half the budget
        clock.now += STEP_S
        governor.plan([(load, 30.0)])
    assert governor.capacity < 0.5 and governor.latency_p95_ms == 150.0
    for _ in range(40):
        for _ in range(10):
            governor.charge(load, 10.0, node_ms=20.0)
        clock.now += STEP_S
        governor.plan([(load, 30.0)])
    assert governor.capacity == 1.0


def test_one_late_step_is_a_hiccup_not_overload():
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, clock=clock)
    load = StreamLoad()
    for step in range(20):  # every fifth step a frame is late (a busy machine for a moment)
        for frame in range(15):
            governor.charge(load, 15.0, node_ms=90.0 if step % 5 == 0 and frame == 0 else 25.0)
        clock.now += STEP_S
        governor.plan([(load, 30.0)])
        assert governor.capacity == 1.0, step
    assert load.level == 0  # 450 ms/s on 900: a hiccup does not shed a stream with room
    for _ in range(2):  # every frame late for a second, the budget at stake: overload (once: then it watches again)
        for _ in range(15):
            governor.charge(load, 15.0, node_ms=110.0)
        clock.now += STEP_S
        governor.plan([(load, 30.0)])
    assert governor.capacity == pytest.approx(0.7)


def test_streams_within_their_share_shed_only_to_keep_the_budget():
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, clock=clock)
    light, heavy = StreamLoad(), StreamLoad()
    light.cost_ms[0], heavy.cost_ms[0] = 15.0, 60.0  # 450 and 1800 ms/s wanted

    def steps(count: int, wait: float) -> None:  # every frame waits `wait` ms: a saturated machine
        for _ in range(count):
            clock.now += STEP_S
            for load, cost in ((light, 15.0), (heavy, 60.0)):
                for _ in range(15):
                    if governor.admit(load):
                        governor.charge(load, cost, node_ms=cost + wait)
            governor.plan([(light, 30.0), (heavy, 30.0)])

    steps(20, wait=60.0)  # over half the budget, but not the budget: the heavy stream pays, alone
    bound = 450.0 + 0.1 * 900.0 / 2  # the light stream's demand, the heavy one at its floor
    assert governor.capacity_ms == pytest.approx(bound)
    assert light.level == 0 and light.share_ms >= 450.0
    assert heavy.level == len(LEVELS) - 1
    steps(6, wait=85.0)  # now the budget is at stake: the light stream pays too
    assert governor.capacity_ms < bound and light.level > 0


def test_the_time_a_heavy_frame_lends_to_lighter_streams_is_no_wait():
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, clock=clock)
    load = StreamLoad()
    for _ in range(4):  # 70 ms in the node: 10 its own, 60 spent serving lighter streams between its effects
        for _ in range(15):
            governor.charge(load, 10.0, node_ms=70.0, lent_ms=60.0)
        clock.now += STEP_S
        governor.plan([(load, 30.0)])
    assert governor.wait_p95_ms == 0.0 and governor.capacity == 1.0


def test_a_lone_stream_sheds_only_to_keep_the_budget():
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, clock=clock)
    load = StreamLoad()
    for latency, expected in ((75.0, 1.0), (100.0, 0.7)):
        for _ in range(2):
            for _ in range(15):
                governor.charge(load, 15.0, node_ms=latency)  # waits 60 or 85 ms
            clock.now += STEP_S
            governor.plan([(load, 30.0)])
        assert governor.capacity == pytest.approx(expected), latency


def test_disabled_governor_never_sheds():
    clock = Clock()
    governor = LoadGovernor(budget_ms=100.0, clock=clock, enabled=False)
    noisy = StreamLoad()
    processed = _run(governor, clock, {"noisy": (noisy, 30.0, {0: 80.0, 1: 80.0, 2: 80.0, 3: 80.0})}, 3.0)
    assert noisy.level == 0 and processed["noisy"] == 90


# ---- the worker ---------------------------------------------------------------------------
class Busy(Effect):
    """Costs about `ms` per frame at full size and a quarter of it at half resolution."""

    name = "busy"
    ms = 60.0

    def apply(self, frame: Frame) -> None:
        width, height = frame.size
        time.sleep(self.ms / 1000.0 * (width * height) / (640 * 360))
        frame.rgb = frame.rgb  # touches the picture


class Nap(Effect):
    """A light stream's effect: about 2 ms a frame, sleeping, so the test does not depend on
    how busy the machine's cores are."""

    name = "nap"

    def apply(self, frame: Frame) -> None:
        time.sleep(0.002)
        frame.rgb = frame.rgb


def _frame(width: int = 640, height: int = 360) -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(np.full((height, width, 3), 90, np.uint8), format="rgb24")
    f.pts = 7
    return f


@pytest.mark.timeout(60)
def test_worker_sheds_the_heavy_stream_and_keeps_the_light_one_whole():
    outputs: dict[str, list[av.VideoFrame]] = {"light": [], "heavy": []}
    worker = DeviceWorker(torch.device("cpu"), budget_ms=100.0, worker_load=0.9)
    light_chain = EffectChain("nap", (Nap(Nap.Params()),))
    heavy = StreamPipeline("heavy", EffectChain("busy", (Busy(Busy.Params()),)), outputs["heavy"].append)
    light = StreamPipeline("light", light_chain, outputs["light"].append)
    worker.attach(heavy)
    worker.attach(light)
    worker.start()
    stop = threading.Event()

    pictures = (_frame(), _frame())  # made once: a loaded runner keeps the 30 fps pace

    def publish() -> None:  # both streams at 30 fps
        while not stop.is_set():
            heavy.submit(pictures[0])
            light.submit(pictures[1])
            time.sleep(1 / 30)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        # the heavy stream (60 ms a frame: 1800 ms/s wanted) climbs to shedding, down to half size
        deadline = time.monotonic() + 20.0
        while heavy.load.level < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        # from then on the light stream is measured: while the heavy one was still climbing,
        # its 60 ms frames could supersede a light frame, which is the climb's cost, not sharing's
        light_in, light_out = light.stats.frames_in, light.stats.frames_out
        time.sleep(3.0)
    finally:
        stop.set()
        publisher.join()
        worker.stop()
    assert heavy.load.level >= 2, heavy.load
    assert heavy.stats.notes["half_resolution"] > 0
    # ... and what went out is still the stream's own size
    assert (outputs["heavy"][-1].width, outputs["heavy"][-1].height) == (640, 360)
    # the light stream was never shed, and kept (nearly) every frame once the heavy one was shed
    assert light.load.level == 0 and "shed" not in light.stats.dropped
    got, sent = light.stats.frames_out - light_out, light.stats.frames_in - light_in
    assert sent >= 30 and got >= 0.9 * sent, light.stats.snapshot()
