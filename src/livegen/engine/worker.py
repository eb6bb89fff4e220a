"""`DeviceWorker`: the one thread that owns a device (torch/CUDA) and runs every stream's chain.

It sweeps the attached pipelines, takes whatever frame each slot holds, processes it and emits the
result. With nothing to do it sleeps until a slot is filled (a `ThreadStage`). Conversions and
effects run here, never on the asyncio loop. Within a round the cheapest streams go first, and
the `LoadGovernor` decides how much of the worker each stream gets and what a stream over its
share sheds (quality, then resolution, then frames). An effect that raises costs its stream the
effects on that frame — the picture goes out as it came in, counted as `effect_error` and logged
at most once per `flow.ratelog.LOG_INTERVAL_S` per stream — never the worker.

Below the live streams run job lanes (`engine.lane`): files and gRPC clients, whose every
frame is processed in order. A round with no live frame waiting takes one lane frame, or half
of one for a pipelined lane (`_step_lane`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import av
import cv2
import numpy as np
import torch

from livegen.effects import EffectChain, Frame
from livegen.engine.governor import LEVELS, LoadGovernor
from livegen.engine.lane import JobLane, LaneClosed, LaneResult
from livegen.engine.pipeline import InputFrame, StreamPipeline
from livegen.errors import ConfigError
from livegen.flow.stage import ThreadStage
from livegen.media.convert import frame_to_rgb, rgb_to_frame
from livegen.observability.quality import QualitySampler

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """One stream's frame within a round of the worker."""

    pipeline: StreamPipeline
    item: InputFrame
    chain: EffectChain
    started: float
    work: Frame | None = None
    own_ms: float = 0.0
    """Time spent on this frame itself so far (not on other streams' frames of the round)."""


@dataclass
class _LaneFrame:
    """A lane's frame between prepare and apply (a pipelined lane holds up to two across rounds)."""

    lane: JobLane
    frame: av.VideoFrame
    future: Future[LaneResult]
    waited_ms: float
    index: int
    work: Frame | None = None
    own_ms: float = 0.0


RECENT_WEIGHT = 0.2  # of the newest frame in a stream's running processing-time average
LANE_PREPARED = 2  # a pipelined lane's frames between prepare and apply: the next one and the one after
PROCESSING_SHARE = 0.5  # of the end-to-end budget that processing may take before effects shed work


def select_device(setting: str) -> torch.device:
    """`auto` → CUDA when torch sees a GPU, else CPU; `cuda` without one is a config error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("engine.device: cuda requested but torch sees no CUDA device")
    if setting in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class DeviceWorker(ThreadStage):
    def __init__(
        self,
        device: torch.device,
        budget_ms: float = 100.0,
        cpu_threads: int = 2,
        worker_load: float = 0.9,
        shed: bool = True,
    ):
        super().__init__(f"livegen-worker-{device.type}")
        self.device = device
        self.cpu_threads = cpu_threads
        self.pool: ThreadPoolExecutor | None = None
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.budget_ms = budget_ms
        self.governor = LoadGovernor(budget_ms, worker_load, enabled=shed)
        self.device_path = device.type == "cuda"
        """Effects work on the device (picture up once, result down once); tests may set it on
        a CPU worker to run that path on CPU tensors."""
        self._lock = threading.Lock()
        self._pipelines: tuple[StreamPipeline, ...] = ()
        self._detached: list[StreamPipeline] = []
        self._lanes: tuple[JobLane, ...] = ()
        self._retired_lanes: list[JobLane] = []
        self._next_lane = 0
        self._prepared: dict[JobLane, deque[_LaneFrame]] = {}
        """Per lane, its frames prepared in earlier rounds and not yet applied, oldest first."""
        self.quality: QualitySampler | None = None
        """Where every Nth frame goes to be scored (person SSIM, flicker) off this thread."""

    @property
    def frame_budget_ms(self) -> float:
        """Processing time per frame above which effects are asked to degrade: half the
        end-to-end budget (the rest is ingest, encoding and the network)."""
        return self.budget_ms * PROCESSING_SHARE

    def start(self) -> None:
        if self.running:
            return
        self.pool = ThreadPoolExecutor(self.cpu_threads, thread_name_prefix="livegen-cpu")
        super().start()
        log.info("%s started (dtype %s)", self.name, self.dtype)

    def stop(self, timeout: float = 5.0) -> bool:
        stopped = super().stop(timeout)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        return stopped

    def attach(self, pipeline: StreamPipeline) -> None:
        pipeline.bind(self.wake)
        with self._lock:
            self._pipelines = (*self._pipelines, pipeline)

    def detach(self, pipeline: StreamPipeline) -> None:
        """Stop running `pipeline`; its effects are closed on this worker's thread."""
        with self._lock:
            self._pipelines = tuple(p for p in self._pipelines if p is not pipeline)
            self._detached.append(pipeline)
        self.wake()

    @property
    def pipelines(self) -> tuple[StreamPipeline, ...]:
        return self._pipelines

    def open_lane(self, name: str, chain: EffectChain, depth: int = 4) -> JobLane:
        """A lane for frames that must all be processed, in order, below the live streams."""
        lane = JobLane(name, chain, depth)
        lane.bind(self.wake)
        with self._lock:
            self._lanes = (*self._lanes, lane)
        return lane

    def close_lane(self, lane: JobLane) -> None:
        """Stop running `lane`; frames not yet taken fail, and its chain is closed on this
        worker's thread."""
        lane.close()
        with self._lock:
            self._lanes = tuple(existing for existing in self._lanes if existing is not lane)
            self._retired_lanes.append(lane)
        self.wake()

    @property
    def lanes(self) -> tuple[JobLane, ...]:
        return self._lanes

    def _close_retired(self) -> None:
        with self._lock:
            detached, self._detached = self._detached, []
            lanes, self._retired_lanes = self._retired_lanes, []
        for lane in lanes:
            for prepared in self._prepared.pop(lane, ()):  # taken, but never to be applied
                lane.finished(prepared.future, None, LaneClosed(f"lane {lane.name} is closed"))
            try:
                lane.chain.close()
            except Exception:
                log.exception("[%s] closing preset %s failed", lane.name, lane.chain.preset)
        for pipeline in detached:
            pipeline.set_chain(None)
        for pipeline in (*self._pipelines, *detached):
            for chain in pipeline.take_retired():
                try:
                    chain.close()
                except Exception:
                    log.exception("[%s] closing preset %s failed", pipeline.name, chain.preset)

    def run(self) -> None:
        with torch.inference_mode():
            super().run()
            for pipeline in self._pipelines:
                pipeline.set_chain(None)
            for lane in self._lanes:
                self.close_lane(lane)
            self._close_retired()

    def step(self) -> bool:
        self._close_retired()
        pipelines = self._pipelines
        if self.governor.due():
            self.governor.plan([(p.load, p.stats.input_fps()) for p in pipelines])
        # cheapest first: a stream's frame never waits behind a heavier stream's in its round
        taken = [(p, item) for p in sorted(pipelines, key=lambda p: p.recent_ms) if (item := p.slot.take()) is not None]
        if taken:
            self._process(taken)
            return True
        return self._run_lane()

    def _run_lane(self) -> bool:
        """One step of one lane (lanes take turns), when no live stream had a frame waiting."""
        lanes = self._lanes
        for turn in range(len(lanes)):
            lane = lanes[(self._next_lane + turn) % len(lanes)]
            if self._step_lane(lane):
                self._next_lane = (self._next_lane + turn + 1) % len(lanes)
                return True
        return False

    def _step_lane(self, lane: JobLane) -> bool:
        """A whole frame, or for a lane whose chain can prepare ahead (`EffectChain.prepares_ahead`)
        one half of one: its next frame prepared, or its oldest prepared frame applied. Such a
        lane keeps the next frame prepared (segmentation running in the CPU pool) while this
        thread applies the one before, and a live frame arriving meanwhile waits for one half."""
        prepared = self._prepared.setdefault(lane, deque())
        if len(prepared) >= LANE_PREPARED:
            self._finish_lane_frame(prepared.popleft())
            return True
        item = lane.take()
        if item is None:
            if prepared:
                self._finish_lane_frame(prepared.popleft())
                return True
            return False
        index = prepared[-1].index + 1 if prepared else lane.frames_done
        frame = self._prepare_lane_frame(lane, item, index)
        if frame is not None:
            if frame.work is not None and lane.chain.prepares_ahead:
                prepared.append(frame)
            else:
                self._finish_lane_frame(frame)
        return True

    def _prepare_lane_frame(
        self, lane: JobLane, item: tuple[av.VideoFrame, float, Future[LaneResult]], index: int
    ) -> _LaneFrame | None:
        """A lane frame converted and prepared, at full quality (a job sheds nothing); None
        when the chain raised (its future says so)."""
        frame, submitted, future = item
        started = time.perf_counter()
        entry = _LaneFrame(lane, frame, future, (started - submitted) * 1000.0, index)
        if not lane.chain.touches_pixels:
            return entry
        try:
            entry.work = Frame(
                index,
                rgb=frame_to_rgb(frame),
                device=self.device,
                dtype=self.dtype,
                pool=self.pool,
                device_path=self.device_path,
            )
            entry.work.timings_ms["convert_in"] = (time.perf_counter() - started) * 1000.0
            lane.chain.prepare(entry.work)
        except Exception as exc:
            lane.finished(future, None, exc)
            return None
        entry.own_ms = (time.perf_counter() - started) * 1000.0
        return entry

    def _finish_lane_frame(self, entry: _LaneFrame) -> None:
        """The chain applied to a prepared lane frame; its future gets the result."""
        lane, frame, work = entry.lane, entry.frame, entry.work
        started = time.perf_counter()
        lent_ms = 0.0
        try:
            if work is None:
                out = frame
            else:
                lent_ms = self._apply_interleaved(lane.chain, work, None)
                ran = time.perf_counter()
                out = _lane_output(work.rgb, frame)
                work.timings_ms["convert_out"] = (time.perf_counter() - ran) * 1000.0
        except Exception as exc:
            lane.finished(entry.future, None, exc)
            return
        own_ms = entry.own_ms + (time.perf_counter() - started) * 1000.0 - lent_ms if work is not None else 0.0
        timings = work.timings_ms if work is not None else {}
        lane.finished(entry.future, LaneResult(out, own_ms, entry.waited_ms, timings), None)

    def _process(self, taken: list[tuple[StreamPipeline, InputFrame]]) -> None:
        """One round: every stream's frame is converted and prepared, then each is applied
        and emitted. Preparing all first lets streams that share a model share its calls."""
        jobs = [job for pipeline, item in taken if (job := self._prepare(pipeline, item)) is not None]
        for job in jobs:
            self._apply_and_emit(job)

    def _failed(self, pipeline: StreamPipeline, chain: EffectChain, item: InputFrame, own_ms: float) -> None:
        """The chain raised on this frame: the picture goes out unprocessed, so the stream goes
        on; counted on every frame, logged once per interval with how many since."""
        pipeline.stats.count_error("effect_error")
        pipeline.error_log.failure("[%s] preset %s failed on a frame; it goes out unprocessed", pipeline.name, chain.preset)
        self._emit(pipeline, item, item.frame, own_ms, None)

    def _prepare(self, pipeline: StreamPipeline, item: InputFrame) -> _Job | None:
        started = time.perf_counter()
        pipeline.apply_retunes()
        chain = pipeline.chain  # one read: a swap lands between frames
        if chain is None:
            return None
        job = _Job(pipeline, item, chain, started)
        if not chain.touches_pixels:
            return job
        load = pipeline.load
        if not self.governor.admit(load):
            pipeline.stats.drop("shed")
            return None
        try:
            job.work = Frame(
                pipeline.next_index(),
                rgb=frame_to_rgb(item.frame, load.scale),
                device=self.device,
                dtype=self.dtype,
                pool=self.pool,
                over_budget=load.degrade or pipeline.recent_ms > self.frame_budget_ms,
                device_path=self.device_path,
            )
            if load.level >= 2:
                job.work.notes.add(LEVELS[load.level])
            job.work.timings_ms["convert_in"] = (time.perf_counter() - started) * 1000.0
            chain.prepare(job.work)
        except Exception:
            self._failed(pipeline, chain, item, (time.perf_counter() - started) * 1000.0)
            return None
        job.own_ms = (time.perf_counter() - started) * 1000.0
        return job

    def _apply_and_emit(self, job: _Job, interleave: bool = True) -> None:
        pipeline, item, chain, work = job.pipeline, job.item, job.chain, job.work
        started = time.perf_counter()
        lent_ms = 0.0  # time this thread spent on other streams' frames between our effects
        try:
            if work is not None:
                if interleave:
                    lent_ms = self._apply_interleaved(chain, work, pipeline)
                else:
                    chain.apply(work)
                ran = time.perf_counter()
                frame = rgb_to_frame(_full_size(work.rgb, item.frame), like=item.frame)
                work.timings_ms["convert_out"] = (time.perf_counter() - ran) * 1000.0
            else:
                frame = item.frame
        except Exception:
            self._failed(pipeline, chain, item, job.own_ms + (time.perf_counter() - started) * 1000.0 - lent_ms)
            return
        self._emit(pipeline, item, frame, job.own_ms + (time.perf_counter() - started) * 1000.0 - lent_ms, work, lent_ms)

    def _apply_interleaved(self, chain: EffectChain, work: Frame, owner: StreamPipeline | None) -> float:
        """`chain` applied to `work` effect by effect; after each effect, the frames that
        lighter live streams (every live stream, for a lane: `owner` None) received meanwhile
        are processed whole — after the last one too, before the owner's picture is converted
        back — so that a long chain or a job makes them wait one effect, not a whole frame.
        The milliseconds spent on them, which are not the owner's."""
        lent_ms = 0.0
        for effect in chain.effects:
            chain.apply_one(effect, work)
            lent_ms += self._serve_lighter(owner)
        return lent_ms

    def _serve_lighter(self, heavy: StreamPipeline | None) -> float:
        """Process, whole, the frames waiting in live streams lighter than `heavy` (any live
        stream when None). Only chains whose frames are prepared on their own (`prepares_ahead`:
        no call shared across the streams of a round, as the diffusion stage's is) are taken
        out of turn. The milliseconds spent."""
        started = time.perf_counter()
        for pipeline in self._pipelines:
            if heavy is not None and (pipeline is heavy or pipeline.recent_ms >= heavy.recent_ms):
                continue
            chain = pipeline.chain
            if chain is None or not chain.prepares_ahead:
                continue
            item = pipeline.slot.take()
            if item is None:
                continue
            job = self._prepare(pipeline, item)
            if job is not None:
                self._apply_and_emit(job, interleave=False)
        return (time.perf_counter() - started) * 1000.0

    def _emit(
        self, pipeline: StreamPipeline, item: InputFrame, frame: av.VideoFrame, processing_ms: float, work: Frame | None,
        lent_ms: float = 0.0,
    ) -> None:
        """Hand the frame on; `processing_ms` is the time spent on it (this stream's own),
        `lent_ms` the time the worker served lighter streams between its effects."""
        done = time.perf_counter()
        node_ms = (done - item.received_at) * 1000.0
        pipeline.recent_ms += (processing_ms - pipeline.recent_ms) * RECENT_WEIGHT
        if work is not None:
            self.governor.charge(pipeline.load, processing_ms, node_ms, lent_ms)
        try:
            pipeline.emit(frame)
        except RuntimeError:  # the loop is closing; the stream is going away
            pipeline.stats.drop("output_closed")
            return
        pipeline.stats.frame_out(
            processing_ms,
            node_ms=node_ms,
            over_budget=processing_ms > self.budget_ms,
        )
        if work is not None:
            pipeline.stats.stages(work.timings_ms, work.notes, work.transfers if work.device_path else None)
            if self.quality is not None:
                self.quality.offer(pipeline.name, work.index, work.source, work.rgb, work.mask_rgb)


def _lane_output(rgb: np.ndarray, like: av.VideoFrame) -> av.VideoFrame:
    """A lane's processed picture as a frame with `like`'s timing: RGB in, RGB out (gRPC
    clients: no 4:2:0 round trip), else yuv420p for an encoder."""
    if like.format.name != "rgb24":
        return rgb_to_frame(rgb, like=like)
    out = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    out.pts = like.pts
    if like.time_base is not None:
        out.time_base = like.time_base
    return out


def _full_size(rgb: np.ndarray, like: av.VideoFrame) -> np.ndarray:
    """A picture processed at a shed resolution, scaled back to the stream's own size."""
    if rgb.shape[1] == like.width and rgb.shape[0] == like.height:
        return rgb
    return cv2.resize(rgb, (like.width, like.height), interpolation=cv2.INTER_LINEAR)
