"""`SlateSource`: the picture a stream shows while its publisher is away.

When a publisher drops (a network blip, OBS restarting), the stream's outputs, recordings and
viewers keep their connections and get this instead: by default the last processed frame,
dimmed, with a short message; or a configured image. Frames are made on a thread of its own at
the stream's frame rate (the YUV conversion is per-pixel work, never on the event loop) and
handed to `emit`, the stream's output, which encodes them like any other frame.
"""

from __future__ import annotations

import fractions
import logging
import time
from collections.abc import Callable
from pathlib import Path

import av
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from livegen.flow.stage import ThreadStage
from livegen.media.video_loop import cover_fit

log = logging.getLogger(__name__)

DIM = 0.35
"""How much of the last frame's brightness is left under the message."""
DEFAULT_SIZE = (1280, 720)
CLOCK = fractions.Fraction(1, 90_000)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default()


def slate_picture(last: np.ndarray | None, message: str, image: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB: `image` fitted to the last frame's size, or the last frame dimmed,
    or black; with `message` centred on it (none over a configured image)."""
    height, width = last.shape[:2] if last is not None else DEFAULT_SIZE[::-1]
    if image is not None:
        return cover_fit(image, width, height)
    base = (last.astype(np.float32) * DIM).astype(np.uint8) if last is not None else np.zeros((height, width, 3), np.uint8)
    if not message:
        return base
    picture = Image.fromarray(base)
    draw = ImageDraw.Draw(picture)
    font = _font(max(12, height // 14))
    left, top, right, bottom = draw.textbbox((0, 0), message, font=font)
    x, y = (width - (right - left)) // 2 - left, (height - (bottom - top)) // 2 - top
    draw.text((x, y), message, font=font, fill=(255, 255, 255), stroke_width=max(1, height // 360), stroke_fill=(0, 0, 0))
    return np.asarray(picture)


class SlateSource(ThreadStage):
    """Emits the slate at `fps` until stopped; pts start at 0 in a 1/90000 time base (the
    stream's encoder carries them on from its last frame)."""

    def __init__(self, stream: str, picture: np.ndarray, emit: Callable[[av.VideoFrame], None], fps: float = 30.0):
        super().__init__(f"livegen-slate-{stream}")
        # even sides: YUV 4:2:0 halves both
        height, width = picture.shape[0] // 2 * 2, picture.shape[1] // 2 * 2
        self._picture = np.ascontiguousarray(picture[:height, :width])
        self._emit = emit
        self._period = 1.0 / fps
        self.frames = 0

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopping:
            frame = av.VideoFrame.from_ndarray(self._picture, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = round(self.frames * self._period / CLOCK), CLOCK
            try:
                self._emit(frame)
            except RuntimeError:  # the loop is closing: the stream is going away
                return
            self.frames += 1
            if self.sleep(max(0.0, started + self.frames * self._period - time.monotonic())):
                return
