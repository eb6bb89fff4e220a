"""`VideoLoop`: a video file decoded over and over on a thread of its own, paced at its frame
rate, whose newest picture anyone may take (a `background` in `video` mode shows it).

Latest wins and nothing queues: the decoding thread cover-fits each picture to the size last
asked for, so the frame path neither decodes nor resizes except on the first frame and when the
frame size changes. Also here: `cover_fit`, the scale-and-centre-crop the loop fits with.
"""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from livegen.flow.stage import ThreadStage

RETRY_S = 1.0
"""How long the loop waits before opening the file again after decoding failed."""


def cover_fit(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """`picture` scaled to cover width × height (keeping its aspect) and centre-cropped to it."""
    ph, pw = picture.shape[:2]
    if (pw, ph) == (width, height):
        return picture
    scale = max(width / pw, height / ph)
    sw, sh = max(width, round(pw * scale)), max(height, round(ph * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(picture, (sw, sh), interpolation=interpolation)
    x0, y0 = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(scaled[y0 : y0 + height, x0 : x0 + width])


class VideoLoop(ThreadStage):
    """See the module docstring. The file is opened and its first picture decoded when the loop
    is made, so a file that does not decode fails there, before any thread starts; `start()`
    starts decoding, `stop()` ends it."""

    def __init__(self, path: Path, name: str | None = None):
        import av

        super().__init__(name or f"livegen-video-{path.stem}")
        self.path = path
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            self.interval = 1.0 / float(rate)
            first = next(container.decode(stream)).to_ndarray(format="rgb24")
        self._size: tuple[int, int] | None = None
        self._source = first
        self._latest: np.ndarray | None = None
        self._lock = threading.Lock()
        self.frames_decoded = 0
        self.loops = 0
        """How many times decoding went back to the start."""

    def latest(self, width: int, height: int) -> np.ndarray:
        """The newest picture at width × height; shared, so read it, do not write to it."""
        with self._lock:
            self._size = (width, height)
            picture, source = self._latest, self._source
        if picture is None or picture.shape[:2] != (height, width):
            picture = cover_fit(source, width, height)
        return picture

    def _publish(self, rgb: np.ndarray) -> None:
        with self._lock:
            size = self._size
        fitted = cover_fit(rgb, *size) if size else None
        with self._lock:
            self._source, self._latest = rgb, fitted
        self.frames_decoded += 1

    def run(self) -> None:
        import av

        while not self.stopping:
            try:
                with av.open(str(self.path)) as container:
                    self._decode(container)
            except Exception as exc:  # a file rewritten or unreadable for a moment: try again
                self.failed(exc)
                self.sleep(RETRY_S)

    def _decode(self, container: Any) -> None:
        stream = container.streams.video[0]
        next_at = time.perf_counter()
        while not self.stopping:
            decoded = 0
            for frame in container.decode(stream):
                if self.stopping:
                    return
                self._publish(frame.to_ndarray(format="rgb24"))
                decoded += 1
                next_at += self.interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    self.sleep(delay)
                else:
                    next_at = time.perf_counter()  # fell behind: carry on at the rate, do not race
            if not decoded:
                raise RuntimeError("no frames after seeking to the start")
            container.seek(0)  # end of file: loop (seeking also flushes the decoder)
            self.loops += 1
