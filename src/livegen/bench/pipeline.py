"""`livegen bench pipeline`: frames through the engine in this process, per preset, no network.

A scene with a real person (see `testing.scenes`: the astronaut portrait over a background,
swaying a little, with camera noise) is rendered once into a loop of decoded-like yuv420p
frames. For each preset the bench builds the preset's chain exactly as a node does, attaches it
to a real `DeviceWorker` through a `StreamPipeline`, and offers frames at the nominal rate from
a pacing thread, as the ingest would. Per frame it records the worker's own timings: each
effect, the input and output conversions and the total processing time. It reports p50/p95/p99
per stage and in total, the output frame rate, drops and the process's CPU, and what happened
to the frames (see `degradation`): how many fell back or were degraded, and why. The chains get
the node's diffusion stage as a node gives it; it is loaded before the first preset that
generates pictures (`generated` backgrounds, `stylize`), and where it cannot run (no CUDA
device, no model) those frames show their fallback and every row says so.

A preset name may join several presets with `+` (e.g. `blur+news`): their effects run as one
chain, in order, with one `segmentation` kept if both have it.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import av
import numpy as np
import torch

from livegen.bench import pipeline_report
from livegen.bench.cpu import CpuWindow
from livegen.bench.degradation import clean, frame_kind
from livegen.bench.driver import Scenario
from livegen.bench.options import PIPELINE_GOAL_PRESET, PipelineOptions, PresetsOptions
from livegen.bench.report import result_head
from livegen.bench.samples import describe
from livegen.config import EngineSettings, PresetSpec, load_settings
from livegen.diffusion.generator import DiffusionGenerator
from livegen.effects import EffectChain
from livegen.engine.pipeline import StreamPipeline
from livegen.engine.presets import PresetLibrary
from livegen.engine.stats import StreamStats
from livegen.engine.worker import DeviceWorker
from livegen.errors import ConfigError, LivegenError
from livegen.media.convert import rgb_to_frame
from livegen.runtime import NodeEngine

LOOP_FRAMES = 48
GOAL = "holds the frame rate with processing p95 ≤ 20 ms, no frame fallen back or degraded"
GOAL_P95_MS = 20.0
FULL_RATE = 0.95
TIMING_STATS = ("p50", "p95", "p99", "mean", "max")


@dataclass(frozen=True)
class PresetsSetup:
    """The checked options and what they name, loaded before any frame is rendered: the device,
    the preset library (every preset the options name exists), the engine's settings and the
    diffusion stage the chains are lent (not loaded yet), built as the node builds them. A
    scenario over presets names its options' class."""

    options: ClassVar[type[PresetsOptions]]
    opts: PresetsOptions
    library: PresetLibrary
    engine: EngineSettings
    device: torch.device
    generator: DiffusionGenerator

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        opts = cls.options.from_args(args)
        try:
            settings = load_settings(args.config)
            built = NodeEngine.build(settings, opts.device)
            for name in cls.named_presets(opts):
                combined_spec(built.presets, name)
        except (ConfigError, LivegenError) as exc:
            raise ValueError(getattr(exc, "detail", exc)) from None
        return cls(opts, built.presets, settings.engine, built.worker.device, built.generator)

    @staticmethod
    def named_presets(opts: Any) -> tuple[str, ...]:
        """Every preset the run will use (checked before it starts)."""
        return opts.presets

    def command(self) -> str:
        return self.opts.command()


@dataclass(frozen=True)
class PipelineSetup(PresetsSetup):
    options: ClassVar[type[PresetsOptions]] = PipelineOptions
    opts: PipelineOptions


class RecordingStats(StreamStats):
    """Stream stats that also keep every sample of the measured window, for exact percentiles."""

    def __init__(self) -> None:
        super().__init__()
        self.recording = False
        self.processing: list[float] = []
        self.stages_seen: dict[str, list[float]] = {}
        self.notes_seen: dict[str, int] = {}
        self.kinds_seen: Counter[str] = Counter()
        """Frames by what happened to them (`degradation.frame_kind`), each counted once."""
        self.over_budget_seen = 0
        self.out_times: list[float] = []

    def frame_out(self, processing_ms: float, node_ms: float, over_budget: bool) -> None:
        super().frame_out(processing_ms, node_ms, over_budget)
        if self.recording:
            self.processing.append(processing_ms)
            self.out_times.append(time.perf_counter())
            self.over_budget_seen += int(over_budget)

    def stages(self, timings_ms: dict[str, float], notes: set[str], copies: int | None = None) -> None:
        super().stages(timings_ms, notes, copies)
        if self.recording:
            for name, ms in timings_ms.items():
                self.stages_seen.setdefault(name, []).append(ms)
            for note in notes:
                self.notes_seen[note] = self.notes_seen.get(note, 0) + 1
            kind = frame_kind(notes)
            if kind is not None:
                self.kinds_seen[kind] += 1


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


def fallback_shows(chain: EffectChain) -> str | None:
    """What a frame of this chain shows when the diffusion stage gives it no picture (the
    `generated` background's fallback mode, `stylize`'s unchanged camera picture); None when
    the chain does not ask the diffusion stage for pictures."""
    for effect in chain.effects:
        if effect.name == "stylize":
            return "unstylized"
        if effect.name == "background" and getattr(effect.params, "mode", None) == "generated":
            return str(effect.params.fallback)  # type: ignore[attr-defined]
    return None


def diffusion_cause(generator: DiffusionGenerator) -> str | None:
    """Why the diffusion stage gives no pictures, in a few words without machine paths (its
    full reason is in the log); None when it runs."""
    if generator.unavailable() is None:
        return None
    if not generator.settings.enabled:
        return "diffusion disabled"
    if generator.device.type != "cuda" and not generator.settings.allow_cpu:
        return "no CUDA device"
    return "no diffusion model"


def diffusion_state(generator: DiffusionGenerator, used_by: list[str]) -> dict[str, Any]:
    model = generator.settings.model
    return {
        "used_by": used_by,
        "model": Path(model).name if Path(model).is_absolute() else model,  # an id, or a folder's name
        "available": generator.unavailable() is None,
        "cause": diffusion_cause(generator),
        "path": generator.path,
    }


def frame_shares(stats: RecordingStats) -> dict[str, float]:
    """Share of the window's frames out per kind (`degradation`) and over the engine's budget."""
    out = len(stats.processing)
    counted = {**stats.kinds_seen, "over_budget": stats.over_budget_seen}
    return {kind: round(count / out, 4) for kind, count in counted.items() if count and out}


def run_preset(
    worker: DeviceWorker,
    name: str,
    spec: PresetSpec,
    chain: EffectChain,
    frames: list[av.VideoFrame],
    opts: PipelineOptions,
    generator: DiffusionGenerator,
) -> dict[str, Any]:
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
    shares = frame_shares(stats)
    shows = fallback_shows(chain)
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
        "frames_by_kind": {**stats.kinds_seen, "over_budget": stats.over_budget_seen},
        "frame_shares": shares,
        "fallback": None if shows is None else {"shows": shows, "cause": diffusion_cause(generator)},
        "clean": clean(shares),
        "cpu": cpu_use,
        "full_rate": fps_out >= FULL_RATE * opts.fps,
    }


def load_diffusion(generator: DiffusionGenerator) -> None:
    print("  loading the diffusion stage for the presets that generate pictures …", flush=True)
    generator.load()
    cause = diffusion_cause(generator)
    if cause is None:
        print(f"    diffusion ready: {generator.path}", flush=True)
    else:
        print(f"    diffusion off ({cause}): those presets show their fallback", flush=True)


def measure(setup: PipelineSetup) -> dict[str, Any]:
    opts, device, generator = setup.opts, setup.device, setup.generator
    print(f"pipeline bench: {opts.width}x{opts.height} @ {opts.fps:g} fps on {device}, "
          f"{opts.seconds:g} s per preset after {opts.warmup:g} s warm-up")
    print(f"  rendering {LOOP_FRAMES} scene frames …", flush=True)
    frames = scene_loop(opts.width, opts.height)
    # per-stage cost at full quality: the governor must not shed what is being measured
    worker = DeviceWorker(device, setup.engine.budget_ms, setup.engine.cpu_threads, shed=False)
    worker.start()
    presets: dict[str, Any] = {}
    generating: list[str] = []
    try:
        for name in opts.presets:
            spec = combined_spec(setup.library, name)
            chain = setup.library.build(spec)
            if fallback_shows(chain) is not None:
                if not generating:
                    load_diffusion(generator)
                generating.append(name)
            print(f"  {name}: running …", flush=True)
            presets[name] = run_preset(worker, name, spec, chain, frames, opts, generator)
            print(pipeline_report.preset_line(presets[name]), flush=True)
    finally:
        worker.stop()
        generator.close()
    goal_result = presets.get(PIPELINE_GOAL_PRESET)
    options = {**asdict(opts), "presets": list(opts.presets), "preset": "presets"}
    return {
        **result_head(opts.scenario, opts.command(), options, str(device)),
        "presets": presets,
        "diffusion": diffusion_state(generator, generating) if generating else None,
        "goal": {
            "preset": PIPELINE_GOAL_PRESET,
            "target": GOAL,
            "met": None if goal_result is None else bool(
                goal_result["full_rate"] and goal_result["clean"]
                and (goal_result["processing_ms"]["p95"] or math.inf) <= GOAL_P95_MS
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
