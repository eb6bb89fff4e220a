"""Engine parts on their own: the slot, stats, the worker's isolation of failing effects, SDP checks."""

from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest
import torch

from livegen.config import EffectSpec, PresetSpec
from livegen.effects import build_chain
from livegen.effects.base import Effect, Frame
from livegen.effects.chain import EffectChain
from livegen.engine.pipeline import StreamPipeline
from livegen.flow.slot import FrameSlot
from livegen.engine.stats import StreamStats
from livegen.engine.worker import DeviceWorker
from livegen.errors import InvalidSdp, Unprocessable
from livegen.rtc.sdp import parse_media_sections, require_video


def test_slot_keeps_only_the_newest_and_reports_replacements():
    woken = []
    slot: FrameSlot[int] = FrameSlot(on_put=lambda: woken.append(1))
    assert slot.put(1) is None
    assert slot.put(2) == 1
    assert slot.take() == 2 and slot.take() is None
    assert len(woken) == 2


def test_stats_rates_and_percentiles():
    clock = [0.0]
    stats = StreamStats(clock=lambda: clock[0])
    for i in range(31):
        clock[0] = i / 30
        stats.frame_in()
        stats.frame_out(processing_ms=float(i), node_ms=float(i) + 1, over_budget=i > 25)
    stats.drop("slot_replaced", 2)
    snap = stats.snapshot()
    assert snap["fps_in"] == pytest.approx(30, rel=0.01)
    assert snap["latency_ms"]["p50"] == 15.0 and snap["node_latency_ms"]["p50"] == 16.0
    assert snap["dropped"] == {"slot_replaced": 2} and snap["over_budget"] == 5


def test_effect_params_are_validated_before_device_work():
    with pytest.raises(Unprocessable) as err:
        build_chain(PresetSpec(name="x", effects=[EffectSpec(name="edges", params={"blend": 2, "glow": 1})]))
    fields = {e["field"] for e in err.value.extra["errors"]}
    assert fields == {"blend", "glow"}


def frame(width=64, height=48, value=200) -> av.VideoFrame:
    rgb = np.full((height, width, 3), value, np.uint8)
    rgb[:, : width // 2] = (250, 20, 20)
    f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    f.pts = 1234
    return f


class Exploding(Effect):
    name = "exploding"

    def apply(self, frame: Frame) -> None:
        raise RuntimeError("boom")


def test_worker_survives_a_failing_effect_and_keeps_other_streams_going():
    outputs: dict[str, list] = {"bad": [], "good": []}
    worker = DeviceWorker(torch.device("cpu"))
    good_chain = build_chain(PresetSpec(name="g", effects=[EffectSpec(name="grayscale")]))
    bad = StreamPipeline("bad", EffectChain("bomb", (Exploding(Exploding.Params()),)), outputs["bad"].append)
    good = StreamPipeline("good", good_chain, outputs["good"].append)
    worker.attach(bad)
    worker.attach(good)
    worker.start()
    try:
        for _ in range(3):
            bad.submit(frame())
            good.submit(frame())
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while min(len(outputs["good"]), len(outputs["bad"])) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
    assert not worker.running and not any(t.name == worker.name for t in threading.enumerate())
    # the failing stream goes on: its frames go out as they came, each failure counted
    assert len(outputs["bad"]) == 3 and bad.stats.errors["effect_error"] == 3
    assert all(f.pts == 1234 for f in outputs["bad"]) and not bad.stats.dropped
    out = outputs["good"][-1]
    assert out.pts == 1234 and out.format.name == "yuv420p"
    rgb = out.to_ndarray(format="rgb24").astype(int)
    assert abs(rgb[10, 5, 0] - rgb[10, 5, 2]) < 6  # the red half is gray now


def test_chain_swap_lands_between_frames():
    seen = []
    worker = DeviceWorker(torch.device("cpu"))
    passthrough = build_chain(PresetSpec(name="p", effects=[EffectSpec(name="passthrough")]))
    gray = build_chain(PresetSpec(name="g", effects=[EffectSpec(name="grayscale")]))
    pipeline = StreamPipeline("s", passthrough, seen.append)
    worker.attach(pipeline)
    worker.start()
    try:
        source = frame()
        pipeline.submit(source)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        pipeline.set_chain(gray)
        pipeline.submit(frame())
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
    assert seen[0] is source  # passthrough hands the decoded frame on untouched
    assert seen[1] is not source and seen[1].format.name == "yuv420p"


def test_sdp_checks():
    offer = "v=0\r\ns=-\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=audio 9 UDP 111\r\na=recvonly\r\n"
    sections = parse_media_sections(offer)
    assert [(s.kind, s.direction) for s in sections] == [("video", "sendonly"), ("audio", "recvonly")]
    require_video(sections, sending=True)
    with pytest.raises(Unprocessable):
        require_video(sections, sending=False)
    for bad in ("", "x=0", "v=0\r\nm=video\r\n", "v=0\r\ns=-\r\n"):
        with pytest.raises(InvalidSdp):
            parse_media_sections(bad)


class Recording(Effect):
    name = "recording"

    def __init__(self, params):
        super().__init__(params)
        self.closed_on: str | None = None

    def apply(self, frame: Frame) -> None:
        frame.notes.add("recorded")

    def close(self) -> None:
        self.closed_on = threading.current_thread().name


def test_replaced_chains_are_closed_on_the_worker_and_stages_are_timed():
    worker = DeviceWorker(torch.device("cpu"))
    first = Recording(Recording.Params())
    pipeline = StreamPipeline("s", EffectChain("one", (first,)), lambda f: None)
    worker.attach(pipeline)
    worker.start()
    try:
        pipeline.submit(frame())
        deadline = time.monotonic() + 5
        while pipeline.stats.frames_out < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = Recording(Recording.Params())
        pipeline.set_chain(EffectChain("two", (second,)))
        pipeline.submit(frame())
        while first.closed_on is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.closed_on == worker.name and second.closed_on is None
        snap = pipeline.stats.snapshot()
        assert snap["stages_ms"]["recording"]["p50"] is not None and snap["degraded"]["recorded"] >= 1
        worker.detach(pipeline)
        while second.closed_on is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert second.closed_on == worker.name  # a detached stream's effects are released too
    finally:
        worker.stop()


class Sluggish(Effect):
    """Takes 70 ms a frame and records whether the worker asked it to shed work."""

    name = "sluggish"

    def __init__(self, params, assets=None):
        super().__init__(params, assets)
        self.told: list[bool] = []

    def apply(self, frame: Frame) -> None:
        self.told.append(frame.over_budget)
        time.sleep(0.07)


def test_effects_are_told_when_the_stream_runs_over_budget():
    worker = DeviceWorker(torch.device("cpu"), budget_ms=100)  # processing share: 50 ms
    slow = Sluggish(Sluggish.Params())
    pipeline = StreamPipeline("s", EffectChain("slow", (slow,)), lambda f: None)
    worker.attach(pipeline)
    worker.start()
    try:
        for _ in range(12):
            pipeline.submit(frame())
            time.sleep(0.08)
    finally:
        worker.stop()
    assert slow.told[0] is False and all(slow.told[-4:])  # told once its average passed 50 ms
