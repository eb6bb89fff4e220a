"""Live output quality, sampled off the hot path: person SSIM and a flicker index.

The device worker offers every processed frame; `QualitySampler.offer` keeps only two
consecutive frames out of every `every` (a pair, so flicker is frame-to-frame), decimated to a
small copy, and hands the pair to its own thread through one slot per stream (latest pair wins).
Costs on the worker: an index check per frame; for the two sampled frames, small copies
(about 0.2 ms each from 1080p).

- person SSIM: SSIM (Wang et al. 2004, Gaussian window σ=1.5, as scikit-image computes it) of
  the output against the input, averaged over the pixels the mask marks as person (> 0.5). The
  background is meant to change; the person is not.
- flicker: mean absolute change of the output between the two frames, over the pixels where the
  input did not change (0 = stable, 1 = full-scale change). A still scene must give a still output;
  a jittering mask edge or a background that is regenerated every frame does not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from livegen.flow.stage import ThreadStage
from livegen.observability.metrics import QualityReading

log = logging.getLogger(__name__)

DEFAULT_EVERY = 30  # frames: one sample a second at 30 fps
MAX_SIDE = 320  # px of the longer side the measurements run at
STALE_S = 30.0  # a stream's reading is forgotten this long after its last sample
STILL_LEVEL = 4.0  # grey levels of input change below which a pixel counts as still
MIN_STILL_SHARE = 0.2  # fewer still pixels than this (a pan, a cut): no flicker reading from the pair
MIN_PERSON_PIXELS = 64

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    # 11x11 at σ=1.5 with reflected borders is scikit-image's gaussian_weights window
    size = 2 * int(3.5 * sigma + 0.5) + 1
    return cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REFLECT)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two grey images (uint8 range, any dtype)."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    mu_a, mu_b = _blur(a, 1.5), _blur(b, 1.5)
    var_a = _blur(a * a, 1.5) - mu_a * mu_a
    var_b = _blur(b * b, 1.5) - mu_b * mu_b
    cov = _blur(a * b, 1.5) - mu_a * mu_b
    return ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / ((mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2))


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def person_ssim(source: np.ndarray, output: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean SSIM over the person pixels (mask > 0.5), or None with too few of them."""
    person = mask > 0.5
    if int(person.sum()) < MIN_PERSON_PIXELS:
        return None
    rows, cols = np.flatnonzero(person.any(axis=1)), np.flatnonzero(person.any(axis=0))
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    scores = ssim_map(_gray(source[box]), _gray(output[box]))
    return float(scores[person[box]].mean())


def flicker_index(sources: tuple[np.ndarray, np.ndarray], outputs: tuple[np.ndarray, np.ndarray]) -> float | None:
    """Mean output change (0-1) over the pixels where the input stayed still; None when the
    input barely has still pixels."""
    a_in, b_in = (_blur(_gray(s), 1.0) for s in sources)
    still = np.abs(b_in - a_in) < STILL_LEVEL
    if still.mean() < MIN_STILL_SHARE:
        return None
    a_out, b_out = (_blur(_gray(o), 1.0) for o in outputs)
    return float(np.abs(b_out - a_out)[still].mean() / 255.0)


def _small_copy(image: np.ndarray) -> np.ndarray:
    """A copy at most MAX_SIDE px on its longer side. Nearest-neighbour resizing is OpenCV's
    cheapest (about 0.1 ms even from 1080p, several times faster than a numpy strided copy), and
    a copy is needed anyway: later frames may reuse the effects' buffers."""
    height, width = image.shape[:2]
    scale = MAX_SIDE / max(height, width)
    if scale >= 1.0:
        return image.copy()
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class _Shot:
    index: int
    at: float
    source: np.ndarray
    output: np.ndarray
    mask: np.ndarray | None


class QualitySampler(ThreadStage):
    """Samples one stream pair in `every` frames; `start`/`stop` own its thread."""

    idle_wait_s = 1.0

    def __init__(self, every: int = DEFAULT_EVERY, clock: Callable[[], float] = time.monotonic):
        super().__init__("quality-sampler")
        if every < 2:
            raise ValueError(f"every must be at least 2 (a sample is two consecutive frames), not {every}")
        self.every = every
        self._clock = clock
        self._first: dict[str, _Shot] = {}  # the worker thread's alone
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[_Shot, _Shot]] = {}
        self._results: dict[str, tuple[float, QualityReading]] = {}
        self.measured = 0

    # ---- the device worker ------------------------------------------------------------------
    def offer(
        self, stream: str, index: int, source: np.ndarray, output: np.ndarray, mask: np.ndarray | None = None
    ) -> None:
        """A processed frame of `stream` (its index in the stream, the input and output RGB,
        the person mask if any). Returns at once unless the frame is one of a sampled pair."""
        phase = index % self.every
        if phase > 1 or not self.running or output.shape != source.shape:
            return
        if mask is not None and mask.shape[:2] != source.shape[:2]:
            mask = None
        now = self._clock()
        shot = _Shot(index, now, _small_copy(source), _small_copy(output), None if mask is None else _small_copy(mask))
        if phase == 0:
            for name in [n for n, s in self._first.items() if now - s.at > STALE_S]:
                del self._first[name]  # streams that ended
            self._first[stream] = shot
            return
        first = self._first.pop(stream, None)
        if first is None or first.index != index - 1:
            return
        with self._lock:
            self._pending[stream] = (first, shot)
        self.wake()

    # ---- readers ------------------------------------------------------------------------------
    def readings(self) -> dict[str, QualityReading]:
        """The latest reading of every stream sampled in the last `STALE_S` seconds."""
        now = self._clock()
        with self._lock:
            return {name: r for name, (at, r) in self._results.items() if now - at <= STALE_S}

    # ---- its thread ---------------------------------------------------------------------------
    def step(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, {}
        for stream, pair in pending.items():
            try:
                reading = self.measure(*pair)
            except Exception:
                log.exception("[%s] quality sample failed", stream)
                continue
            now = self._clock()
            with self._lock:
                self._results[stream] = (now, reading)
                for name in [n for n, (at, _) in self._results.items() if now - at > STALE_S]:
                    del self._results[name]
            self.measured += 1
        return False  # a sample a second at most: wait for the next pair

    @staticmethod
    def measure(first: _Shot, second: _Shot) -> QualityReading:
        ssim = None if second.mask is None else person_ssim(second.source, second.output, second.mask)
        return QualityReading(ssim, flicker_index((first.source, second.source), (first.output, second.output)))
