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
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from livegen.bench.cpu import CpuWindow
from livegen.bench.options import check_video
from livegen.bench.report import (
    load_results,
    machine_info,
    refresh_readme,
    utc_now,
    write_result,
)
from livegen.config import PresetSpec, load_settings
from livegen.effects.base import EffectContext
from livegen.engine.pipeline import StreamPipeline
from livegen.engine.presets import PresetLibrary
from livegen.engine.stats import StreamStats
from livegen.engine.worker import DeviceWorker, select_device
from livegen.errors import ConfigError, LivegenError
from livegen.media.assets import AssetStore
from livegen.media.convert import rgb_to_frame

log = logging.getLogger(__name__)

SCENARIO = "pipeline"
SCHEMA = 1
LOOP_FRAMES = 48
GOAL_PRESET = "blur+news"
GOAL = "holds the frame rate with processing p95 ≤ 20 ms"
GOAL_P95_MS = 20.0
FULL_RATE = 0.95


@dataclass(frozen=True)
class PipelineOptions:
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    seconds: float = 10.0
    warmup: float = 2.0
    presets: tuple[str, ...] = ("passthrough", "blur", "office", "studio", "news", GOAL_PRESET)
    device: str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PipelineOptions:
        presets = tuple(p.strip() for p in args.presets.split(",") if p.strip())
        opts = cls(args.width, args.height, args.fps, args.seconds, args.warmup, presets, args.device)
        check_video(opts.width, opts.height, opts.fps, opts.seconds, opts.warmup, max_fps=240)
        if not presets:
            raise ValueError("--presets names no preset")
        return opts

    def command(self) -> str:
        words = ["livegen", "bench", SCENARIO]
        for key, value in asdict(self).items():
            if isinstance(value, tuple):
                value = ",".join(value)
            words += [f"--{key}", f"{value:g}" if isinstance(value, float) else str(value)]
        return " ".join(words)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = PipelineOptions()
    add = parser.add_argument
    add("--width", type=int, default=d.width, help=f"video width (default {d.width})")
    add("--height", type=int, default=d.height, help=f"video height (default {d.height})")
    add("--fps", type=float, default=d.fps, help=f"frames per second offered (default {d.fps:g})")
    add("--seconds", type=float, default=d.seconds, help=f"measured seconds per preset (default {d.seconds:g})")
    add("--warmup", type=float, default=d.warmup, help=f"seconds discarded first (default {d.warmup:g})")
    add("--presets", default=",".join(d.presets),
        help=f"presets to run, comma-separated; join presets with + (default {','.join(d.presets)})")
    add("--device", choices=["auto", "cpu", "cuda"], default=d.device, help="engine device (default auto)")
    add("--config", type=Path, default=None, help="settings file (presets and assets folders)")
    add("--output", type=Path, default=Path("bench/results"), help="results folder (default bench/results)")


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


def quantiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    values = np.asarray(samples)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2),
        "mean": round(float(values.mean()), 2), "max": round(float(values.max()), 2),
    }


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
    processing = quantiles(stats.processing)
    out = len(stats.processing)
    fps_out = out / window if window > 0 else 0.0
    stages = {stage: quantiles(samples) for stage, samples in stats.stages_seen.items()}
    return {
        "preset": name,
        "effects": [effect.name for effect in spec.effects],
        "frames_offered": in_window,
        "frames_out": out,
        "fps_offered": round(in_window / window, 2) if window > 0 else None,
        "fps_out": round(fps_out, 2),
        "processing_ms": processing,
        "stages_ms": stages,
        "dropped": snapshot["dropped"],
        "degraded": stats.notes_seen,
        "cpu": cpu_use,
        "full_rate": fps_out >= FULL_RATE * opts.fps,
    }


def run(args: argparse.Namespace) -> int:
    try:
        opts = PipelineOptions.from_args(args)
    except ValueError as exc:
        print(f"livegen bench pipeline: {exc}")
        return 2
    settings = load_settings(args.config)
    assets = AssetStore(settings.server.uploads_dir, settings.assets_dir(), settings.server.max_upload_bytes)
    try:
        library = PresetLibrary.from_folder(
            settings.presets_dir(), settings.engine.default_preset, EffectContext(assets=assets)
        )
        for name in opts.presets:
            combined_spec(library, name)
    except (ConfigError, LivegenError) as exc:
        print(f"livegen bench pipeline: {getattr(exc, 'detail', exc)}")
        return 2
    device = select_device(opts.device)
    print(f"pipeline bench: {opts.width}x{opts.height} @ {opts.fps:g} fps on {device}, "
          f"{opts.seconds:g} s per preset after {opts.warmup:g} s warm-up")
    print(f"  rendering {LOOP_FRAMES} scene frames …", flush=True)
    frames = scene_loop(opts.width, opts.height)
    worker = DeviceWorker(device, settings.engine.budget_ms, settings.engine.cpu_threads)
    worker.start()
    presets: dict[str, Any] = {}
    try:
        for name in opts.presets:
            print(f"  {name}: running …", flush=True)
            presets[name] = run_preset(worker, library, name, frames, opts)
            print(_line(presets[name]), flush=True)
    finally:
        worker.stop()
    goal_result = presets.get(GOAL_PRESET)
    result: dict[str, Any] = {
        "scenario": SCENARIO,
        "schema": SCHEMA,
        "date_utc": utc_now(),
        "command": opts.command(),
        "options": {**asdict(opts), "presets": list(opts.presets), "preset": "presets"},
        "machine": machine_info(str(device)),
        "presets": presets,
        "goal": {
            "preset": GOAL_PRESET,
            "target": GOAL,
            "met": None if goal_result is None else bool(
                goal_result["full_rate"] and (goal_result["processing_ms"]["p95"] or math.inf) <= GOAL_P95_MS
            ),
        },
    }
    print(table(result))
    path = write_result(result, args.output)
    refresh_readme(args.output, SCENARIO, section(load_results(args.output, SCENARIO)))
    print(f"wrote {path}")
    return 0


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _line(r: dict[str, Any]) -> str:
    p = r["processing_ms"]
    return (f"    fps {r['fps_out']:.1f} of {r['fps_offered']}, processing p50/p95/p99 "
            f"{_ms(p['p50'])}/{_ms(p['p95'])}/{_ms(p['p99'])} ms, dropped {r['dropped'] or 'none'}, "
            f"degraded {r['degraded'] or 'none'}, CPU {r['cpu'].get('bench_process_pct')} %")


def table(result: dict[str, Any]) -> str:
    lines = []
    for name, r in result["presets"].items():
        lines.append(f"  {name} ({' → '.join(r['effects'])}): fps {r['fps_out']:.1f}")
        lines.append(f"    {'stage':<14}{'p50':>8}{'p95':>8}{'p99':>8}  ms")
        for stage, q in [*r["stages_ms"].items(), ("total", r["processing_ms"])]:
            lines.append(f"    {stage:<14}{_ms(q['p50']):>8}{_ms(q['p95']):>8}{_ms(q['p99']):>8}")
    goal = result["goal"]
    if goal["met"] is not None:
        lines.append(f"  goal ({goal['preset']}: {goal['target']}): {'met' if goal['met'] else 'not met'}")
    return "\n".join(lines)


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [
        "## pipeline: the engine in-process, per preset",
        "",
        "`livegen bench pipeline`: a person scene (the astronaut portrait over a room-like background,",
        "swaying, with camera noise) is offered to a real device worker at the nominal rate, one preset",
        "after another; times are the worker's own per frame (each effect, the conversions, total).",
        "*CPU* is the whole bench process (worker, CPU pool, pacing) in percent of one core.",
        "",
        "| preset | effects | video | fps out | total p50 / p95 / p99 ms | stages p95 ms | dropped | degraded"
        " | CPU % | device, cores | date (UTC) | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results:
        o, m = r["options"], r["machine"]
        for preset, p in r["presets"].items():
            q = p["processing_ms"]
            stages = ", ".join(f"{s} {_ms(v['p95'])}" for s, v in p["stages_ms"].items())
            lines.append("| " + " | ".join([
                preset, " → ".join(p["effects"]), f"{o['width']}×{o['height']} @ {o['fps']:g}",
                f"{p['fps_out']:.1f}", f"{_ms(q['p50'])} / {_ms(q['p95'])} / {_ms(q['p99'])}", stages,
                ", ".join(f"{k} {v}" for k, v in p["dropped"].items()) or "none",
                ", ".join(f"{k} {v}" for k, v in p["degraded"].items()) or "none",
                str(p["cpu"].get("bench_process_pct")), f"{m.get('torch_device')}, {m.get('cores')}",
                r["date_utc"][:16].replace("T", " "), f"[{name}]({name})",
            ]) + " |")
        goal = r.get("goal") or {}
        if goal.get("met") is not None:
            lines.append("")
            lines.append(f"Goal ({goal['preset']}: {goal['target']}): {'met' if goal['met'] else 'not met'}"
                         f" in [{name}]({name}).")
    return "\n".join(lines) + "\n"
