"""`DeviceWorker`: the one thread that owns a device (torch/CUDA) and runs every stream's chain.

It sweeps the attached pipelines, takes whatever frame each slot holds, processes it and emits the
result. With nothing to do it sleeps until a slot is filled. Conversions and effects run here,
never on the asyncio loop. An effect that raises costs its stream that frame (counted as
`effect_error`), never the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from livegen.effects import EffectChain, Frame
from livegen.engine.pipeline import InputFrame, StreamPipeline
from livegen.errors import ConfigError
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

RECENT_WEIGHT = 0.2  # of the newest frame in a stream's running processing-time average
PROCESSING_SHARE = 0.5  # of the end-to-end budget that processing may take before effects shed work


def select_device(setting: str) -> torch.device:
    """`auto` → CUDA when torch sees a GPU, else CPU; `cuda` without one is a config error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("engine.device: cuda requested but torch sees no CUDA device")
    if setting in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class DeviceWorker:
    def __init__(self, device: torch.device, budget_ms: float = 100.0, cpu_threads: int = 2):
        self.device = device
        self.cpu_threads = cpu_threads
        self.pool: ThreadPoolExecutor | None = None
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.budget_ms = budget_ms
        self._lock = threading.Lock()
        self._pipelines: tuple[StreamPipeline, ...] = ()
        self._detached: list[StreamPipeline] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.quality: QualitySampler | None = None
        """Where every Nth frame goes to be scored (person SSIM, flicker) off this thread."""

    @property
    def frame_budget_ms(self) -> float:
        """Processing time per frame above which effects are asked to degrade: half the
        end-to-end budget (the rest is ingest, encoding and the network)."""
        return self.budget_ms * PROCESSING_SHARE

    @property
    def name(self) -> str:
        return f"livegen-worker-{self.device.type}"

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self.pool = ThreadPoolExecutor(self.cpu_threads, thread_name_prefix="livegen-cpu")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        log.info("%s started (dtype %s)", self.name, self.dtype)

    def stop(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.error("%s did not stop within %.1f s", self.name, timeout)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def attach(self, pipeline: StreamPipeline) -> None:
        pipeline.bind(self._wake.set)
        with self._lock:
            self._pipelines = (*self._pipelines, pipeline)

    def detach(self, pipeline: StreamPipeline) -> None:
        """Stop running `pipeline`; its effects are closed on this worker's thread."""
        with self._lock:
            self._pipelines = tuple(p for p in self._pipelines if p is not pipeline)
            self._detached.append(pipeline)
        self._wake.set()

    @property
    def pipelines(self) -> tuple[StreamPipeline, ...]:
        return self._pipelines

    def _close_retired(self) -> None:
        with self._lock:
            detached, self._detached = self._detached, []
        for pipeline in detached:
            pipeline.set_chain(None)
        for pipeline in (*self._pipelines, *detached):
            for chain in pipeline.take_retired():
                try:
                    chain.close()
                except Exception:
                    log.exception("[%s] closing preset %s failed", pipeline.name, chain.preset)

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopping.is_set():
                self._wake.clear()
                self._close_retired()
                taken = [(p, item) for p in self._pipelines if (item := p.slot.take()) is not None]
                if taken:
                    self._process(taken)
                else:
                    self._wake.wait(0.5)
            for pipeline in self._pipelines:
                pipeline.set_chain(None)
            self._close_retired()

    def _process(self, taken: list[tuple[StreamPipeline, InputFrame]]) -> None:
        """One round: every stream's frame is converted and prepared, then each is finished
        and emitted. Preparing all first lets streams that share a model share its calls."""
        jobs = [job for pipeline, item in taken if (job := self._begin(pipeline, item)) is not None]
        for job in jobs:
            self._finish(job)

    def _failed(self, pipeline: StreamPipeline, chain: EffectChain) -> None:
        pipeline.stats.drop("effect_error")
        if pipeline.failed_chain is not chain:
            pipeline.failed_chain = chain
            log.exception("[%s] preset %s failed on a frame", pipeline.name, chain.preset)

    def _begin(self, pipeline: StreamPipeline, item: InputFrame) -> _Job | None:
        started = time.perf_counter()
        pipeline.apply_retunes()
        chain = pipeline.chain  # one read: a swap lands between frames
        if chain is None:
            return None
        job = _Job(pipeline, item, chain, started)
        if not chain.touches_pixels:
            return job
        try:
            job.work = Frame(
                pipeline.next_index(),
                rgb=frame_to_rgb(item.frame),
                device=self.device,
                dtype=self.dtype,
                pool=self.pool,
                over_budget=pipeline.recent_ms > self.frame_budget_ms,
            )
            job.work.timings_ms["convert_in"] = (time.perf_counter() - started) * 1000.0
            chain.prepare(job.work)
        except Exception:
            self._failed(pipeline, chain)
            return None
        return job

    def _finish(self, job: _Job) -> None:
        pipeline, item, chain, work, started = job.pipeline, job.item, job.chain, job.work, job.started
        try:
            if work is not None:
                chain.finish(work)
                ran = time.perf_counter()
                frame = rgb_to_frame(work.rgb, like=item.frame)
                work.timings_ms["convert_out"] = (time.perf_counter() - ran) * 1000.0
            else:
                frame = item.frame
        except Exception:
            self._failed(pipeline, chain)
            return
        done = time.perf_counter()
        processing_ms = (done - started) * 1000.0
        pipeline.recent_ms += (processing_ms - pipeline.recent_ms) * RECENT_WEIGHT
        try:
            pipeline.emit(frame)
        except RuntimeError:  # the loop is closing; the stream is going away
            pipeline.stats.drop("output_closed")
            return
        pipeline.stats.frame_out(
            processing_ms,
            node_ms=(done - item.received_at) * 1000.0,
            over_budget=processing_ms > self.budget_ms,
        )
        if work is not None:
            pipeline.stats.stages(work.timings_ms, work.notes)
            if self.quality is not None:
                self.quality.offer(pipeline.name, work.index, work.source, work.rgb, work.mask_rgb)
