"""`SyntheticVideoTrack`: a paced camera stand-in with colour bars, a moving square and,
optionally, the delay stamp. Frames are drawn in an executor, not on the asyncio loop."""

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


class SyntheticVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, stamp: bool = False):
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.stamp = stamp
        self._background = colour_bars(width, height)
        self._index = 0
        self._start: float | None = None
        self.frames_sent = 0

    def draw(self, index: int) -> av.VideoFrame:
        rgb = self._background.copy()
        side = max(16, self.height // 6)
        x = (index * 8) % max(1, self.width - side)
        y = self.height - side - 8
        rgb[y : y + side, x : x + side] = (255, 128, 0)
        if self.stamp:
            write_stamp(rgb, now_ms())
        return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            due = self._start + self._index / self.fps
            await asyncio.sleep(max(0.0, due - loop.time()))
        index = self._index
        self._index += 1
        frame = await loop.run_in_executor(None, self.draw, index)
        frame.pts = int(index * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames_sent += 1
        return frame
