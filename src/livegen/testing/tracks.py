"""Paced stand-ins for a camera and a microphone.

`SyntheticVideoTrack`: colour bars, a moving square and, optionally, the delay stamp and white
flashes. `SyntheticAudioTrack`: silence with optional 1 kHz beeps. Tracks given the same
`epoch` (a loop time) and event period flash and beep at the same instants, for A/V sync tests.
Frames are drawn in an executor, not on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livegen.testing.stamp import write_stamp

VIDEO_CLOCK = 90_000
BARS = np.array(
    [[235, 235, 235], [235, 235, 16], [16, 235, 235], [16, 235, 16],
     [235, 16, 235], [235, 16, 16], [16, 16, 235], [16, 16, 16]],
    dtype=np.uint8,
)


def colour_bars(width: int, height: int) -> np.ndarray:
    columns = (np.arange(width) * len(BARS) // width).astype(np.intp)
    return np.ascontiguousarray(np.broadcast_to(BARS[columns], (height, width, 3)))


def now_ms() -> int:
    return int(time.monotonic() * 1000)


class PacedTrack(MediaStreamTrack):
    """A live track that produces frame `index` at `epoch + index * period` (loop time), like a
    camera or a microphone: never faster, and late frames are not made up for by bursts."""

    def __init__(self, epoch: float | None = None):
        super().__init__()
        self._start: float | None = epoch
        self._index = 0

    async def next_index(self, period_s: float) -> int:
        """Wait for the next frame's time; its index. `MediaStreamError` once stopped."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._index * period_s - loop.time()))
        self._index += 1
        return self._index - 1


class SyntheticVideoTrack(PacedTrack):
    kind = "video"

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        stamp: bool = False,
        flash_every_s: float | None = None,
        epoch: float | None = None,
    ):
        super().__init__(epoch)
        self.width, self.height, self.fps = width, height, fps
        self.stamp = stamp
        self.flash_every = round(flash_every_s * fps) if flash_every_s else None
        self._background = colour_bars(width, height)
        self.frames_sent = 0

    def draw(self, index: int) -> av.VideoFrame:
        if self.flash_every and index % self.flash_every == 0:
            rgb = np.full((self.height, self.width, 3), 255, np.uint8)
            return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        rgb = self._background.copy()
        side = max(16, self.height // 6)
        x = (index * 8) % max(1, self.width - side)
        y = self.height - side - 8
        rgb[y : y + side, x : x + side] = (255, 128, 0)
        if self.stamp:
            write_stamp(rgb, now_ms())
        return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")

    async def recv(self) -> av.VideoFrame:
        index = await self.next_index(1.0 / self.fps)
        frame = await asyncio.get_running_loop().run_in_executor(None, self.draw, index)
        frame.pts = int(index * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames_sent += 1
        return frame


class SyntheticAudioTrack(PacedTrack):
    kind = "audio"
    SAMPLE_RATE = 48_000
    PTIME = 0.02

    def __init__(self, beep_every_s: float | None = None, beep_s: float = 0.1, epoch: float | None = None):
        super().__init__(epoch)
        self.samples = int(self.SAMPLE_RATE * self.PTIME)
        self.beep_every = round(beep_every_s / self.PTIME) if beep_every_s else None
        self.beep_frames = max(1, round(beep_s / self.PTIME))
        t = np.arange(self.samples) / self.SAMPLE_RATE
        self._tone = (np.sin(2 * np.pi * 1000 * t) * 12000).astype(np.int16)
        self._silence = np.zeros(self.samples, np.int16)

    async def recv(self) -> av.AudioFrame:
        index = await self.next_index(self.PTIME)
        beep = self.beep_every is not None and index % self.beep_every < self.beep_frames
        frame = av.AudioFrame.from_ndarray(
            (self._tone if beep else self._silence).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.SAMPLE_RATE
        frame.pts = index * self.samples
        frame.time_base = fractions.Fraction(1, self.SAMPLE_RATE)
        return frame
