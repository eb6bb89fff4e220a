"""`livegen bench pipeline`: frames through the engine in this process, per preset, no network.

A scene with a real person (see `testing.scenes`: the astronaut portrait over a background,
swaying a little, with camera noise) is rendered once into a loop of decoded-like yuv420p
frames. For each preset the bench builds the preset's chain exactly as a node does, attaches it
to a real `DeviceWorker` through a `StreamPipeline`, and offers frames at the nominal rate from
a pacing thread, as the ingest would. Per frame it records the worker's own timings: each
effect, the input and output conversions and the total processing time. It reports p50/p95/p99
per stage and in total, the output frame rate, drops, degradations and the process's CPU.

A preset name may join several presets with `+` (e.g. `blur+news`): their effects run as one
chain, in order, with one `segmentation` kept if both have it.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import av
import numpy as np

from livegen.bench import pipeline_report
from livegen.bench.cpu import CpuWindow
from livegen.bench.driver import Scenario
from livegen.bench.options import PIPELINE_GOAL_PRESET, PipelineOptions
from livegen.bench.report import result_head
from livegen.bench.samples import describe
from livegen.config import EngineSettings, PresetSpec, load_settings
from livegen.effects.base import EffectContext
from livegen.engine.pipeline import StreamPipeline
from livegen.engine.presets import PresetLibrary
from livegen.engine.stats import StreamStats
from livegen.engine.worker import DeviceWorker, select_device
from livegen.errors import ConfigError, LivegenError
from livegen.media.assets import AssetStore
from livegen.media.convert import rgb_to_frame

LOOP_FRAMES = 48
GOAL = "holds the frame rate with processing p95 ≤ 20 ms"
GOAL_P95_MS = 20.0
FULL_RATE = 0.95
TIMING_STATS = ("p50", "p95", "p99", "mean", "max")


@dataclass(frozen=True)
class PipelineSetup:
    """The checked options and what they name, loaded before any frame is rendered: the preset
    library (every preset asked for exists) and the engine's settings."""

    opts: PipelineOptions
    library: PresetLibrary
    engine: EngineSettings

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PipelineSetup:
        opts = PipelineOptions.from_args(args)
        try:
            settings = load_settings(args.config)
            assets = AssetStore(settings.server.uploads_dir, settings.assets_dir(), settings.server.max_upload_bytes)
            library = PresetLibrary.from_folder(
                settings.presets_dir(), settings.engine.default_preset, EffectContext(assets=assets)
            )
            for name in opts.presets:
                combined_spec(library, name)
        except (ConfigError, LivegenError) as exc:
            raise ValueError(getattr(exc, "detail", exc)) from None
        return cls(opts, library, settings.engine)

    def command(self) -> str:
        return self.opts.command()


class RecordingStats(StreamStats):
    """Stream stats that also keep every sample of the measured window, for exact percentiles."""

    def __init__(self) -> None:
        super().__init__()
        self.recording = False
        self.processing: list[float] = []
        self.stages_seen: dict[str, list[float]] = {}
        self.notes_seen: dict[str, int] = {}
        self.out_times: list[float] = []

    def frame_out(self, processing_ms: float, node_ms: float, over_budget: bool) -> None:
        super().frame_out(processing_ms, node_ms, over_budget)
        if self.recording:
            self.processing.append(processing_ms)
            self.out_times.append(time.perf_counter())

    def stages(self, timings_ms: dict[str, float], notes: set[str]) -> None:
        super().stages(timings_ms, notes)
        if self.recording:
            for name, ms in timings_ms.items():
                self.stages_seen.setdefault(name, []).append(ms)
            for note in notes:
                self.notes_seen[note] = self.notes_seen.get(note, 0) + 1


def scene_loop(width: int, height: int, count: int = LOOP_FRAMES) -> list[av.VideoFrame]:
    """A person swaying a little over a room-like background, with camera noise, as yuv420p."""
    from livegen.testing.scenes import compose_scene, known_background, sensor_noise

    rng = np.random.default_rng(0)
    background = known_background((width, height), "noise")
    frames = []
    for index in range(count):
        sway = 0.5 + 0.03 * math.sin(2 * math.pi * index / count)
        picture, _ = compose_scene(background, person_height=0.85, center_x=sway)
        frame = rgb_to_frame(sensor_noise(picture, 3.0, rng))
        frame.pts = index
        frames.append(frame)
    return frames


def combined_spec(library: PresetLibrary, name: str) -> PresetSpec:
    """Preset `name`, or presets joined with `+` run as one chain (one segmentation kept)."""
    parts = [library.spec(part) for part in name.split("+")]
    effects, seen_segmentation = [], False
    for spec in parts:
        for effect in spec.effects:
            if effect.name == "segmentation":
                if seen_segmentation:
                    continue
                seen_segmentation = True
            effects.append(effect)
    return PresetSpec(name=name, description=" + ".join(p.description for p in parts), effects=effects)


def run_preset(
    worker: DeviceWorker, library: PresetLibrary, name: str, frames: list[av.VideoFrame], opts: PipelineOptions
) -> dict[str, Any]:
    spec = combined_spec(library, name)
    chain = library.build(spec)
    stats = RecordingStats()
    emitted = threading.Event()
    pipeline = StreamPipeline(f"bench-{name}", chain, emit=lambda frame: emitted.set(), stats=stats)
    worker.attach(pipeline)
    interval = 1.0 / opts.fps
    cpu = CpuWindow({"bench_process": None})
    try:
        offered = 0
        started = time.perf_counter()
        measured_from = started + opts.warmup
        ends = measured_from + opts.seconds
        in_window = 0
        while True:
            now = time.perf_counter()
            if now >= ends:
                break
            if not stats.recording and now >= measured_from:
                cpu.start()
                stats.recording = True
                window_started = now
            frame = frames[offered % len(frames)]
            pipeline.submit(frame, arrived_at=now)
            offered += 1
            in_window += int(stats.recording)
            # pace on the ideal schedule so a slow frame does not shift the ones after it
            delay = started + offered * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        window = time.perf_counter() - window_started
        stats.recording = False
        cpu_use = cpu.stop()
    finally:
        worker.detach(pipeline)
    snapshot = stats.snapshot()
    out = len(stats.processing)
    fps_out = out / window if window > 0 else 0.0
    return {
        "preset": name,
        "effects": [effect.name for effect in spec.effects],
        "frames_offered": in_window,
        "frames_out": out,
        "fps_offered": round(in_window / window, 2) if window > 0 else None,
        "fps_out": round(fps_out, 2),
        "processing_ms": describe(stats.processing, TIMING_STATS, 2),
        "stages_ms": {stage: describe(samples, TIMING_STATS, 2) for stage, samples in stats.stages_seen.items()},
        "dropped": snapshot["dropped"],
        "degraded": stats.notes_seen,
        "cpu": cpu_use,
        "full_rate": fps_out >= FULL_RATE * opts.fps,
    }


def measure(setup: PipelineSetup) -> dict[str, Any]:
    opts = setup.opts
    device = select_device(opts.device)
    print(f"pipeline bench: {opts.width}x{opts.height} @ {opts.fps:g} fps on {device}, "
          f"{opts.seconds:g} s per preset after {opts.warmup:g} s warm-up")
    print(f"  rendering {LOOP_FRAMES} scene frames …", flush=True)
    frames = scene_loop(opts.width, opts.height)
    worker = DeviceWorker(device, setup.engine.budget_ms, setup.engine.cpu_threads)
    worker.start()
    presets: dict[str, Any] = {}
    try:
        for name in opts.presets:
            print(f"  {name}: running …", flush=True)
            presets[name] = run_preset(worker, setup.library, name, frames, opts)
            print(pipeline_report.preset_line(presets[name]), flush=True)
    finally:
        worker.stop()
    goal_result = presets.get(PIPELINE_GOAL_PRESET)
    options = {**asdict(opts), "presets": list(opts.presets), "preset": "presets"}
    return {
        **result_head(opts.scenario, opts.command(), options, str(device)),
        "presets": presets,
        "goal": {
            "preset": PIPELINE_GOAL_PRESET,
            "target": GOAL,
            "met": None if goal_result is None else bool(
                goal_result["full_rate"] and (goal_result["processing_ms"]["p95"] or math.inf) <= GOAL_P95_MS
            ),
        },
    }


SCENARIO = Scenario(
    name=PipelineOptions.scenario,
    options=PipelineSetup.from_args,
    measure=measure,
    section=pipeline_report.section,
    table=pipeline_report.table,
)
