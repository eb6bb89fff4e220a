"""`process_file`: a video file through an effect chain on the device worker, every frame.

A file is not live: no frame is dropped, and it may take longer or shorter than the video lasts.
Three threads overlap the work, with bounded hand-offs between them:

    decode thread ──▶ job lane on the DeviceWorker (at most `LANE_DEPTH` frames) ──▶ encode thread
         └── audio packets (or decoded audio to transcode), in file order, beside the frames ──┘

The decode thread demuxes the input, decodes video frames and submits each to a lane
(`engine.lane`), which the worker runs only when no live stream has a frame waiting; it hands
the lane's futures, and the audio, to the encode thread in file order through a bounded queue.
The encode thread takes the results in order, encodes them and muxes them with the audio into a
temporary file beside the output, which is renamed to the output's name only once the file is
complete: a canceled or failed job leaves no half-written output. Frames keep the input's
timestamps and time base, so a variable frame rate stays as it was. Both threads run at a lower
CPU priority than the node's own (`JOB_NICE`), so that inside a node live streams go first.

The calling thread supervises: it reports progress, watches `cancel`, and cleans up.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from av.video.reformatter import VideoReformatter

from livegen.effects import EffectChain
from livegen.engine.lane import JobLane, LaneFull, LaneResult
from livegen.engine.worker import DeviceWorker
from livegen.files.checks import (
    FileError,
    check_output,
    ffmpeg_reason,
    frames_expected,
    open_input,
    video_stream,
)
from livegen.files.containers import OutputFormat
from livegen.files.streams import OutputStreams, lower_priority

__all__ = ["FileError", "ProcessCanceled", "Progress", "process_file"]

log = logging.getLogger(__name__)

LANE_DEPTH = 4
HANDOFF_ITEMS = 16
"""Video futures and audio items between the decode and encode threads (with the lane's depth,
what bounds the frames a job holds)."""
POLL_S = 0.1
PROGRESS_INTERVAL_S = 0.5
RATE_WINDOW_S = 3.0
JOB_NICE = 10


class ProcessCanceled(Exception):
    """`cancel` was set: the job stopped and left no output."""


@dataclass
class Progress:
    frames_done: int
    frames_total: int | None
    """From the container when known (its frame count, or duration × rate)."""
    fps: float
    """Frames per second over the last few seconds (the whole run's average in the final one)."""
    eta_s: float | None
    elapsed_s: float
    media_s: float = 0.0
    """Seconds of video done, by the frames' timestamps (media_s / elapsed_s: the real-time factor)."""
    stages_ms: dict[str, float] = field(default_factory=dict)
    """Mean time per frame so far: decode, the worker's processing (and each effect's part of it),
    waiting for the worker, encode."""


class _Stopped(Exception):
    """Inside the job's threads: another thread failed, or the job was canceled."""


_END = object()


def process_file(
    src: Path,
    dst: Path,
    chain: EffectChain,
    worker: DeviceWorker,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    lane_name: str = "file",
    nice: int = JOB_NICE,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
) -> Progress:
    """Blocking; call from a thread (never the asyncio loop). Opens a lane on `worker`, closes it
    (and with it `chain`) at the end. Writes `dst` atomically. Returns the final Progress.
    `FileError` for unusable files, `ProcessCanceled` when `cancel` was set; other exceptions
    (MemoryError, torch.OutOfMemoryError, OSError, an effect's error) propagate: the caller treats
    them as transient. `nice`: the CPU priority of the decode and encode threads (0: unchanged)."""
    src, dst = Path(src), Path(dst)
    if not worker.running:
        chain.close()
        raise RuntimeError(f"{worker.name} is not running")
    lane = worker.open_lane(lane_name, chain, LANE_DEPTH)  # closing it closes the chain, on the worker
    try:
        fmt = check_output(src, dst)
        source = open_input(src)
        try:
            job = _FileJob(source, src, dst, fmt, lane, cancel or threading.Event(), nice)
            return job.run(on_progress, progress_interval_s)
        finally:
            source.close()
    finally:
        worker.close_lane(lane)


class _FileJob:
    """One run of `process_file`: its threads, their hand-offs and what they measure."""

    def __init__(
        self, source: Any, src: Path, dst: Path, fmt: OutputFormat, lane: JobLane, cancel: threading.Event, nice: int
    ):
        self.source, self.src, self.dst, self.fmt = source, src, dst, fmt
        self.lane, self.chain, self.cancel, self.nice = lane, lane.chain, cancel, nice
        self.video = video_stream(source)
        self.video.thread_type = "AUTO"  # frame threads: decoding keeps pace with the worker
        self.audio = source.streams.audio[0] if source.streams.audio else None
        self.total = frames_expected(self.video, source)
        self.stop = threading.Event()
        self.to_rgb = VideoReformatter()  # the decode thread's: it keeps its conversion set up
        self.error: BaseException | None = None
        self.handoff: queue.Queue[Any] = queue.Queue(HANDOFF_ITEMS)
        self.frames_in = 0
        self.frames_done = 0
        self.first_pts: int | None = None
        self.last_pts: int | None = None
        self.stage_sums: dict[str, float] = {}
        self.temp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")

    # ---- the calling thread ---------------------------------------------------------------------
    def run(self, on_progress: Callable[[Progress], None] | None, interval_s: float) -> Progress:
        started = time.perf_counter()
        rates: deque[tuple[float, int]] = deque([(started, 0)])
        out: OutputStreams | None = None
        threads: list[threading.Thread] = []
        finished = False
        try:
            out = OutputStreams.open(self.temp, self.fmt, self.video, self.audio)
            name = self.lane.name
            threads = [
                threading.Thread(target=self._guard, args=(self._decode,), name=f"livegen-{name}-decode"),
                threading.Thread(target=self._guard, args=(self._encode, out), name=f"livegen-{name}-encode"),
            ]
            for thread in threads:
                thread.start()
            next_report = started
            while threads[1].is_alive():
                if self.cancel.is_set():
                    self.stop.set()
                now = time.perf_counter()
                if on_progress is not None and now >= next_report:
                    on_progress(self._progress(now, started, rates))
                    next_report = now + interval_s
                wait_s = POLL_S if on_progress is None else min(POLL_S, next_report - time.perf_counter())
                threads[1].join(max(wait_s, 0.005))
            threads[0].join()
            if self.error is not None:
                raise self.error
            if self.cancel.is_set():
                raise ProcessCanceled(f"processing {self.src.name} was canceled")
            out.close()
            os.replace(self.temp, self.dst)
            finished = True
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()
            if not finished:
                if out is not None:
                    out.abandon()
                self.temp.unlink(missing_ok=True)
        final = self._progress(time.perf_counter(), started, None)
        if on_progress is not None:
            on_progress(final)
        return final

    def _progress(self, now: float, started: float, rates: deque[tuple[float, int]] | None) -> Progress:
        done, elapsed = self.frames_done, now - started
        if rates is None:  # the final report: the whole run
            fps, total, eta = (done / elapsed if elapsed > 0 else 0.0), done, 0.0
        else:
            rates.append((now, done))
            while len(rates) > 2 and now - rates[1][0] >= RATE_WINDOW_S:
                rates.popleft()
            then, before = rates[0]
            fps = (done - before) / (now - then) if now > then else 0.0
            total = max(self.total, done) if self.total else None
            eta = (total - done) / fps if total is not None and fps > 0 else None
        sums = dict(self.stage_sums)  # one copy (under the GIL) while the threads add to it
        stages = {name: round(ms / max(done, 1), 2) for name, ms in sums.items()}
        return Progress(done, total, round(fps, 2), None if eta is None else round(eta, 1), round(elapsed, 3),
                        round(self._media_s(), 3), stages)

    def _media_s(self) -> float:
        if self.first_pts is None or self.last_pts is None or self.video.time_base is None:
            return 0.0
        rate = self.video.average_rate or self.video.guessed_rate
        one_frame = 1.0 / float(rate) if rate else 0.0
        return float((self.last_pts - self.first_pts) * self.video.time_base) + one_frame

    def _add(self, stage: str, ms: float) -> None:
        self.stage_sums[stage] = self.stage_sums.get(stage, 0.0) + ms

    # ---- both threads ---------------------------------------------------------------------------
    def _guard(self, body: Callable[..., None], *args: Any) -> None:
        lower_priority(self.nice)
        try:
            body(*args)
        except _Stopped:
            pass
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            self.stop.set()

    def _check(self) -> None:
        if self.stop.is_set() or self.cancel.is_set():
            self.stop.set()
            raise _Stopped

    # ---- the decode thread ----------------------------------------------------------------------
    def _decode(self) -> None:
        lane = self.lane
        submitted: deque[Future[LaneResult]] = deque()
        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        copy_audio = self.audio is not None and self.audio.codec_context.name in self.fmt.audio_copy
        try:
            for packet in self.source.demux(streams):
                self._check()
                if packet.stream.index == self.video.index:
                    started = time.perf_counter()
                    frames = packet.decode()
                    self._add("decode", (time.perf_counter() - started) * 1000.0)
                    for frame in frames:
                        self._submit(lane, submitted, self._timed_frame(self._for_lane(frame)))
                elif copy_audio:
                    if packet.dts is not None and packet.size:
                        self._hand(("audio_packet", packet))
                else:
                    for audio_frame in packet.decode():
                        self._hand(("audio_frame", audio_frame))
        except av.error.FFmpegError as exc:
            raise FileError(f"{self.src}: decoding failed after {self.frames_in} frames ({ffmpeg_reason(exc)})") from None
        if self.frames_in == 0:
            raise FileError(f"{self.src}: no video frame could be decoded")
        self._hand(_END)

    def _for_lane(self, frame: av.VideoFrame) -> av.VideoFrame:
        """What the lane is given: for a chain that changes pixels, the picture already in RGB
        (the same conversion the worker would make), so that this thread converts it, not the
        worker; RGB comes back, and the encode thread converts it for the encoder."""
        if not self.chain.touches_pixels or frame.format.name == "rgb24":
            return frame
        started = time.perf_counter()
        rgb = self.to_rgb.reformat(frame, format="rgb24")
        rgb.pts, rgb.time_base = frame.pts, frame.time_base
        self._add("to_rgb", (time.perf_counter() - started) * 1000.0)
        return rgb

    def _timed_frame(self, frame: av.VideoFrame) -> av.VideoFrame:
        """The frame with a timestamp that follows the one before (encoders need them strictly
        increasing); the input's own wherever it has one that does."""
        if frame.time_base is None:
            frame.time_base = self.video.time_base
        if frame.pts is None or (self.last_pts is not None and frame.pts <= self.last_pts):
            frame.pts = 0 if self.last_pts is None else self.last_pts + 1
        if self.first_pts is None:
            self.first_pts = frame.pts
        self.last_pts = frame.pts
        return frame

    def _submit(self, lane: JobLane, submitted: deque[Future[LaneResult]], frame: av.VideoFrame) -> None:
        """Into the lane; while it holds `depth` frames, wait for its oldest to be done."""
        while True:
            self._check()
            try:
                future = lane.submit(frame)
                break
            except LaneFull:
                while submitted and submitted[0].done():
                    submitted.popleft()
                if submitted:
                    wait_futures([submitted[0]], timeout=POLL_S)
        submitted.append(future)
        while submitted and submitted[0].done():
            submitted.popleft()
        self.frames_in += 1
        self._hand(("video", future))

    def _hand(self, item: Any) -> None:
        while True:
            self._check()
            try:
                self.handoff.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    # ---- the encode thread ----------------------------------------------------------------------
    def _encode(self, out: OutputStreams) -> None:
        while True:
            self._check()
            try:
                item = self.handoff.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                break
            kind, payload = item
            if kind == "video":
                result = self._result(payload)
                started = time.perf_counter()
                frame = out.encodable(result.frame)
                converted = time.perf_counter()
                out.write_video(frame)
                self._add("to_yuv", (converted - started) * 1000.0)
                self._add("encode", (time.perf_counter() - converted) * 1000.0)
                self._add("process", result.processing_ms)
                self._add("wait", result.waited_ms)
                for stage, ms in result.timings_ms.items():
                    self._add(stage, ms)
                self.frames_done += 1
            elif kind == "audio_packet":
                out.copy_audio(payload)
            else:
                out.write_audio(payload)
        started = time.perf_counter()
        out.flush()
        self._add("encode", (time.perf_counter() - started) * 1000.0)

    def _result(self, future: Future[LaneResult]) -> LaneResult:
        while True:
            self._check()
            try:
                return future.result(timeout=POLL_S)
            except FutureTimeout:
                continue
