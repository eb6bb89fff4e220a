"""`livegen bench process`: video files through the engine (`files.process`), and a live stream
beside a file job on the same device worker.

Files: a clip is synthesized — the pipeline bench's person scene (the astronaut portrait over a
room-like background, swaying, with camera noise), `seconds` long at the options' size and
rate, H.264 with a stereo AAC tone — and processed with each preset through `process_file` on a
real `DeviceWorker`, as `livegen process` does it. Recorded: wall time, frames per second, the
real-time factor (seconds of video per second of processing), the mean time per frame of each
stage (decode, the conversions, each effect, encode; the worker's `process` is the conversions
and effects it ran itself) and the process's CPU. Goal: the first preset (`blur`) at ≥ 2× real
time.

Live beside a job (`--live`): a live stream at `live_preset` is attached to the same worker,
and frames are submitted to it at the nominal rate from a pacing thread, as a node's ingest
submits decoded frames; it is measured alone, then while a file job (the first preset, the
clip processed again and again) runs on the same worker. Recorded per phase: the stream's
frames out per second, its processing p50/p95 and its in-node latency (arrival to the end of
processing) p50/p95, dropped and degraded frames, and the job's frames per second. Goals: beside
the job the stream keeps ≥ 95 % of its fps, and its processing p95 and in-node p95 stay within
110 % + 2 ms of alone.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np

from livegen.bench import process_report
from livegen.bench.cpu import CpuWindow
from livegen.bench.driver import BenchFailed, Scenario
from livegen.bench.options import PresetsOptions, ProcessOptions
from livegen.bench.pipeline import (
    TIMING_STATS,
    PresetsSetup,
    RecordingStats,
    combined_spec,
    scene_loop,
)
from livegen.bench.report import result_head
from livegen.bench.samples import describe
from livegen.bench.verdicts import at_least, at_most, ratio, verdict
from livegen.engine.pipeline import StreamPipeline
from livegen.engine.worker import DeviceWorker
from livegen.files import containers
from livegen.files.process import ProcessCanceled, Progress, process_file

REALTIME_GOAL = 2.0
LIVE_FPS_SHARE = 0.95
LIVE_P95_SHARE = 1.10
LIVE_P95_SLACK_MS = 2.0
CLIP_X264 = {"preset": "veryfast", "crf": "20"}  # a camera's file: decent quality, not what we measure
AUDIO_RATE = 48000
AUDIO_FRAME = 1024
PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class ProcessSetup(PresetsSetup):
    """`PresetsSetup` for the file scenario (its live stream's preset is checked too)."""

    options: ClassVar[type[PresetsOptions]] = ProcessOptions
    opts: ProcessOptions

    @staticmethod
    def named_presets(opts: Any) -> tuple[str, ...]:
        return (*opts.presets, opts.live_preset)


def synthesize_clip(path: Path, opts: ProcessOptions) -> int:
    """The person scene as an MP4 (H.264 + stereo AAC tone) of `opts.seconds`; its frame count."""
    frames = scene_loop(opts.width, opts.height)
    rate = Fraction(opts.fps).limit_denominator(1001)
    count = max(1, round(opts.seconds * opts.fps))
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate, options=CLIP_X264)
        video.width, video.height, video.pix_fmt = opts.width, opts.height, "yuv420p"
        audio = out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "stereo"
        for index in range(count):
            frame = frames[index % len(frames)]
            frame.pts, frame.time_base = index, 1 / rate
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for start in range(0, round(count / opts.fps * AUDIO_RATE), AUDIO_FRAME):
            t = np.arange(start, start + AUDIO_FRAME) / AUDIO_RATE
            tone = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
            samples = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            samples.sample_rate, samples.pts, samples.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
            out.mux(audio.encode(samples))
        out.mux(audio.encode(None))
    return count


class _Printer:
    """Progress lines while a file is processed (every couple of seconds)."""

    def __init__(self, label: str):
        self.label, self.next = label, time.monotonic() + PROGRESS_EVERY_S

    def __call__(self, p: Progress) -> None:
        if time.monotonic() >= self.next:
            self.next = time.monotonic() + PROGRESS_EVERY_S
            print(f"    {self.label}: {p.frames_done}/{p.frames_total or '?'} frames, {p.fps:.1f} fps", flush=True)


def run_file(setup: ProcessSetup, worker: DeviceWorker, name: str, clip: Path, out: Path) -> dict[str, Any]:
    """One preset over the whole clip: its figures."""
    chain = setup.library.build(combined_spec(setup.library, name))
    cpu = CpuWindow({"bench_process": None})
    cpu.start()
    final = process_file(clip, out, chain, worker, on_progress=_Printer(name), lane_name=f"bench-{name}")
    used = cpu.stop()
    factor = final.media_s / final.elapsed_s if final.elapsed_s > 0 else None
    size = out.stat().st_size
    return {
        "preset": name,
        "frames": final.frames_done,
        "media_s": final.media_s,
        "wall_s": final.elapsed_s,
        "fps": final.fps,
        "realtime": None if factor is None else round(factor, 2),
        "stages_ms": final.stages_ms,
        "output_mbit_s": round(size * 8 / final.media_s / 1e6, 2) if final.media_s else None,
        "cpu": used,
    }


class LiveStats(RecordingStats):
    """Recording stats that also keep each frame's in-node latency."""

    def __init__(self) -> None:
        super().__init__()
        self.node: list[float] = []

    def frame_out(self, processing_ms: float, node_ms: float, over_budget: bool) -> None:
        super().frame_out(processing_ms, node_ms, over_budget)
        if self.recording:
            self.node.append(node_ms)


class _RepeatedJob:
    """A file job on a thread of its own, the clip processed again and again until `stop()`;
    counts the frames it finished."""

    def __init__(self, setup: ProcessSetup, worker: DeviceWorker, preset: str, clip: Path, folder: Path):
        self.setup, self.worker, self.preset, self.clip, self.folder = setup, worker, preset, clip, folder
        self.cancel = threading.Event()
        self.finished_frames = 0
        self.current = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bench-file-job", daemon=True)

    def frames(self) -> int:
        return self.finished_frames + self.current

    def _seen(self, progress: Progress) -> None:
        self.current = progress.frames_done

    def _run(self) -> None:
        runs = 0
        while not self.cancel.is_set():
            chain = self.setup.library.build(combined_spec(self.setup.library, self.preset))
            try:
                final = process_file(self.clip, self.folder / f"job-{runs % 2}.mp4", chain, self.worker,
                                     on_progress=self._seen, cancel=self.cancel, lane_name="bench-job",
                                     progress_interval_s=0.1)
            except ProcessCanceled:
                return
            except BaseException as exc:
                self.error = exc
                return
            self.finished_frames += final.frames_done
            self.current = 0
            runs += 1

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.cancel.set()
        self.thread.join(30)


def live_phase(
    setup: ProcessSetup, worker: DeviceWorker, frames: list[av.VideoFrame], job: _RepeatedJob | None
) -> dict[str, Any]:
    """The live stream for warm-up + `live_seconds`, frames submitted at the nominal rate from
    this thread (as a node's ingest does); with `job`, a file job runs meanwhile."""
    opts = setup.opts
    stats = LiveStats()
    chain = setup.library.build(combined_spec(setup.library, opts.live_preset))
    pipeline = StreamPipeline("bench-live", chain, emit=lambda frame: None, stats=stats)
    worker.attach(pipeline)
    cpu = CpuWindow({"bench_process": None})
    interval = 1.0 / opts.fps
    if job is not None:
        job.start()
    try:
        started = time.perf_counter()
        measured_from, ends = started + opts.warmup, started + opts.warmup + opts.live_seconds
        offered = in_window = 0
        window_started = job_frames = None
        while (now := time.perf_counter()) < ends:
            if window_started is None and now >= measured_from:
                cpu.start()
                stats.recording, window_started = True, now
                job_frames = job.frames() if job is not None else None
            pipeline.submit(frames[offered % len(frames)], arrived_at=now)
            offered += 1
            in_window += int(stats.recording)
            delay = started + offered * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        window = time.perf_counter() - (window_started or started)
        stats.recording = False
        used = cpu.stop()
        job_fps = (job.frames() - job_frames) / window if job is not None and job_frames is not None else None
    finally:
        if job is not None:
            job.stop()
        worker.detach(pipeline)
    if job is not None and job.error is not None:
        raise BenchFailed(f"the file job failed: {type(job.error).__name__}: {job.error}")
    return {
        "frames_offered": in_window,
        "fps_offered": round(in_window / window, 2),
        "fps_out": round(len(stats.processing) / window, 2),
        "processing_ms": describe(stats.processing, TIMING_STATS, 2),
        "node_ms": describe(stats.node, TIMING_STATS, 2),
        "dropped": stats.snapshot()["dropped"],
        "degraded": stats.notes_seen,
        "job_fps": None if job_fps is None else round(job_fps, 2),
        "cpu": used,
    }


def live_verdicts(alone: dict[str, Any], beside: dict[str, Any]) -> list[dict[str, Any]]:
    def p95_goal(key: str, goal: str) -> dict[str, Any]:
        a, b = alone[key]["p95"], beside[key]["p95"]
        limit = None if a is None else round(a * LIVE_P95_SHARE + LIVE_P95_SLACK_MS, 2)
        return verdict(goal, at_most(b, limit), alone_ms=a, beside_ms=b, limit_ms=limit)

    fps_limit = alone["fps_out"] * LIVE_FPS_SHARE
    return [
        verdict(f"fps beside the job ≥ {LIVE_FPS_SHARE:.0%} of alone", at_least(beside["fps_out"], fps_limit),
                alone=alone["fps_out"], beside=beside["fps_out"], share=ratio(beside["fps_out"], alone["fps_out"])),
        p95_goal("processing_ms", f"processing p95 ≤ {LIVE_P95_SHARE:.0%} of alone + {LIVE_P95_SLACK_MS:g} ms"),
        p95_goal("node_ms", f"in-node p95 ≤ {LIVE_P95_SHARE:.0%} of alone + {LIVE_P95_SLACK_MS:g} ms"),
    ]


def measure(setup: ProcessSetup) -> dict[str, Any]:
    opts, device = setup.opts, setup.device
    print(f"process bench: a {opts.seconds:g} s clip at {opts.width}x{opts.height} @ {opts.fps:g} fps on {device}, "
          f"presets {', '.join(opts.presets)}; video out {containers.OUTPUTS['.mp4'].video_codec} "
          f"{containers.X264_OPTIONS}", flush=True)
    worker = DeviceWorker(device, setup.engine.budget_ms, setup.engine.cpu_threads, shed=False)
    worker.start()
    files: dict[str, Any] = {}
    live: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="livegen-bench-process-") as folder:
            clip = Path(folder) / "clip.mp4"
            print("  synthesizing the clip …", flush=True)
            synthesize_clip(clip, opts)
            for name in opts.presets:
                print(f"  {name}: processing …", flush=True)
                files[name] = run_file(setup, worker, name, clip, Path(folder) / f"out-{name.replace('+', '_')}.mp4")
                print(process_report.file_line(files[name]), flush=True)
            if opts.live:
                frames = scene_loop(opts.width, opts.height)
                print(f"  live {opts.live_preset} alone …", flush=True)
                alone = live_phase(setup, worker, frames, None)
                print(process_report.live_line(alone), flush=True)
                print(f"  live {opts.live_preset} beside a {opts.presets[0]} file job …", flush=True)
                beside = live_phase(setup, worker, frames, _RepeatedJob(setup, worker, opts.presets[0], clip,
                                                                        Path(folder)))
                print(process_report.live_line(beside), flush=True)
                live = {"preset": opts.live_preset, "job_preset": opts.presets[0], "alone": alone, "beside": beside,
                        "verdicts": live_verdicts(alone, beside)}
    finally:
        worker.stop()
        setup.generator.close()
    goal_preset = opts.presets[0]
    factor = files[goal_preset]["realtime"]
    options = {**asdict(opts), "presets": list(opts.presets), "preset": "files"}
    return {
        **result_head(opts.scenario, opts.command(), options, str(device)),
        "encoder": {"video": containers.OUTPUTS[".mp4"].video_codec, "options": dict(containers.X264_OPTIONS)},
        "files": files,
        "live": live,
        "goal": verdict(f"{goal_preset} ≥ {REALTIME_GOAL:g}× real time", at_least(factor, REALTIME_GOAL),
                        preset=goal_preset, realtime=factor),
    }


SCENARIO = Scenario(
    name=ProcessOptions.scenario,
    options=ProcessSetup.from_args,
    measure=measure,
    section=process_report.section,
    table=process_report.table,
)
