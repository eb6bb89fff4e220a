"""`LatencyProbe`: reads a received video track and notes, per frame, when it arrived and the
delay stamp it carries; `summarize` turns a window of those notes into the numbers we report.

The arrival time is taken on the loop the moment `recv()` returns; reading the stamp (a full
RGB conversion) runs on the probe's own reader thread, so the loop keeps pulling frames.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livegen.bench.samples import describe
from livegen.testing.stamp import elapsed_ms, read_stamp
from livegen.testing.tracks import now_ms

log = logging.getLogger(__name__)

MAX_PENDING_READS = 8
"""Frames waiting for the reader; beyond this a frame is counted as `unread`, never queued."""
PLAUSIBLE_MS = 30_000
"""A stamp older than this is a misread (the check bits let ~1/256 of corruptions through)."""
LATENCY_STATS = ("p50", "p95", "p99", "mean", "min", "max", "stdev")


@dataclass(slots=True)
class FrameNote:
    received_ms: int
    stamp: int | None = None
    state: str = "pending"  # pending → read | unreadable | unread


def _read_frame_stamp(frame: av.VideoFrame) -> int | None:
    return read_stamp(frame.to_ndarray(format="rgb24"))


class LatencyProbe:
    def __init__(self, track: MediaStreamTrack, name: str):
        self.track = track
        self.name = name
        self.notes: list[FrameNote] = []
        self.first_frame = asyncio.Event()
        self.ended = False
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"livegen-bench-{name}-stamp")
        self._pending = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"bench {self.name} probe")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await self.track.recv()
                note = FrameNote(now_ms())
                self.notes.append(note)
                self.first_frame.set()
                if self._pending >= MAX_PENDING_READS:
                    note.state = "unread"
                    continue
                self._pending += 1
                future = self._reader.submit(_read_frame_stamp, frame)
                future.add_done_callback(
                    lambda done, note=note: loop.call_soon_threadsafe(self._stamp_read, note, done)
                )
        except MediaStreamError:
            self.ended = True

    def _stamp_read(self, note: FrameNote, done: Future[int | None]) -> None:
        self._pending -= 1
        try:
            stamp = done.result()
        except Exception:  # a frame the reader cannot convert counts as unreadable
            log.debug("%s: stamp read failed", self.name, exc_info=True)
            stamp = None
        if stamp is not None and elapsed_ms(stamp, note.received_ms) <= PLAUSIBLE_MS:
            note.stamp, note.state = stamp, "read"
        else:
            note.state = "unreadable"

    async def settle(self, timeout: float = 2.0) -> None:
        """Wait (bounded) for the stamps still being read."""
        async with asyncio.timeout(timeout):
            while self._pending:
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2.0)
        self._reader.shutdown(wait=True, cancel_futures=True)  # at most one read left: ~1 ms

    def window(self, start_ms: int, end_ms: int) -> list[FrameNote]:
        return [n for n in self.notes if start_ms <= n.received_ms < end_ms]


def latencies(notes: list[FrameNote]) -> np.ndarray:
    return np.array([elapsed_ms(n.stamp, n.received_ms) for n in notes if n.stamp is not None], dtype=np.float64)


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    """Latency statistics in ms, as every result records them."""
    return describe(values, LATENCY_STATS, 1)


def summarize(notes: list[FrameNote], frames_sent: int, seconds: float) -> dict[str, Any]:
    """The numbers for one path over one window: counts, delivered fps, latency percentiles (ms).

    `lost` compares frames sent and received in the same window, so it is off by the one or two
    frames in flight at its edges; a steady loss shows as a rate, not a handful.
    """
    read = [n for n in notes if n.state == "read"]
    stamps = {n.stamp for n in read}
    gaps = np.diff([n.received_ms for n in notes]) if len(notes) > 1 else np.array([])
    return {
        "frames_sent": frames_sent,
        "frames_received": len(notes),
        "delivered_fps": round(len(notes) / seconds, 2) if seconds > 0 else None,
        "frames_lost": max(0, frames_sent - len(notes)),
        "frames_undecodable": sum(n.state == "unreadable" for n in notes),
        "frames_unread": sum(n.state in ("unread", "pending") for n in notes),
        "frames_repeated": len(read) - len(stamps),
        "latency_ms": percentiles(latencies(read)),
        "max_gap_ms": int(gaps.max()) if gaps.size else None,
    }
