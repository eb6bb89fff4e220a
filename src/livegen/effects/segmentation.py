"""`segmentation`: where the person is, for the effects after it (background replacement).

The model is MediaPipe's selfie segmentation, which ships inside the mediapipe package (never
downloaded): `general` (256×256 input) or `landscape` (144×256, faster). It runs on a
downscaled copy of the input in the worker's CPU pool: `prepare` submits the frame, so the
inference overlaps whatever the effects before this one do, and `apply` collects it.

The raw mask is low resolution and soft. It is then
- refined against the picture with a guided filter (edges follow the picture's edges, hair
  and shoulders stay sharp) computed at `refine_width` and upsampled, which costs a fraction
  of a full-resolution filter;
- stabilised over time: blended with the previous mask, but only where the picture did not
  change, so a still person does not shimmer and a moving one leaves no trail;
- shaped by `threshold` (where the edge sits) and `feather` (how soft it is).
With `every_n_frames` > 1, or when the stream runs over budget, the model runs on only some
frames and the others reuse the last mask (noted as `mask_reused`).

`prepare` may run for the next frame before `apply` ran for this one (`prepares_ahead`: a job
lane overlaps the model's run on frame N+1 with the rest of frame N); each prepared frame keeps
its own input and inference until its `apply`, so the masks are the same either way.

The result is `frame.mask_rgb` ((H, W) float32 on the host) and `frame.mask` ((1, H, W) on the
device; on the CPU the same memory), and `frame.small`: the reduced picture with the mask at its
size, which a blurred background starts from. The picture itself is not changed.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from livegen.effects.base import Effect, EffectParams, Frame
from livegen.errors import Unprocessable
from livegen.media.scale import shrink

MODEL_INPUT = {"general": (256, 256), "landscape": (256, 144)}  # (width, height)
MODEL_SELECTION = {"general": 0, "landscape": 1}


class SegmentationParams(EffectParams):
    model: Literal["general", "landscape"] = "landscape"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Mask value where the person's edge is placed."""
    feather: float = Field(0.3, gt=0.0, le=1.0)
    """Width of the soft edge around the threshold (in mask units, 0–1)."""
    smoothing: float = Field(0.6, ge=0.0, lt=1.0)
    """How much of the previous mask is kept where the picture is still (0: none)."""
    every_n_frames: int = Field(1, ge=1, le=30)
    refine_width: int = Field(320, ge=64, le=1920)
    """Width at which the guided filter runs; the result is upsampled to the frame."""
    refine_radius: int = Field(4, ge=1, le=32)
    refine_eps: float = Field(1e-3, gt=0.0, le=1.0)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a gray guide; float32 in, float32 out, box filters only."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


@dataclass
class _Prepared:
    """One frame between `prepare` and `apply`."""

    reduced: np.ndarray
    """The frame at refine size: the guide, and the model's input from it."""
    fresh: bool
    """Whether the model runs on this frame (else the last mask is reused)."""
    pending: Future[np.ndarray] | None = None
    raw: np.ndarray | None = None


class SegmentationEffect(Effect):
    name = "segmentation"
    Params = SegmentationParams
    params: SegmentationParams
    prepares_ahead = True

    def __init__(self, params: SegmentationParams, context=None):
        super().__init__(params, context)
        try:
            from mediapipe.python.solutions.selfie_segmentation import (
                SelfieSegmentation,
            )
        except ImportError as exc:
            raise Unprocessable(
                "segmentation needs mediapipe 0.10.21 (make install puts it in; by hand: "
                f"pip install --no-deps mediapipe==0.10.21) ({exc})"
            ) from None
        self._graph = SelfieSegmentation(model_selection=MODEL_SELECTION[params.model])
        self._prepared: OrderedDict[int, _Prepared] = OrderedDict()  # by id(frame), oldest first
        self._previous: np.ndarray | None = None  # stabilised mask at refine size
        self._previous_gray: np.ndarray | None = None
        self._raw: np.ndarray | None = None  # last model output (model size)
        self._inference: Future[np.ndarray] | None = None  # the latest submitted to the pool

    def retunable(self, params: SegmentationParams) -> bool:  # type: ignore[override]
        return params.model == self.params.model  # the rest is read per frame

    def _infer(self, small: np.ndarray) -> np.ndarray:
        mask = self._graph.process(small).segmentation_mask
        if mask is None:  # the graph gave no output for this input: fail this frame, clearly
            raise RuntimeError("MediaPipe selfie segmentation returned no mask for this frame")
        return mask.astype(np.float32, copy=False)

    def _infer_after(self, previous: Future[np.ndarray] | None, small: np.ndarray) -> np.ndarray:
        """In the pool: one graph runs one frame at a time, in order (a frame prepared ahead
        waits for the one before it)."""
        if previous is not None:
            wait([previous])
        return self._infer(small)

    def prepare(self, frame: Frame) -> None:
        width, height = frame.size
        p = self.params
        refine_size = (min(p.refine_width, width), max(1, round(height * min(p.refine_width, width) / width)))
        reduced = shrink(frame.source, refine_size)
        due = frame.index % p.every_n_frames == 0 and not (frame.over_budget and self._raw is not None)
        prepared = _Prepared(reduced, fresh=due or self._raw is None)
        if prepared.fresh:
            # bilinear: the model's input is at most a step below the refine size, and an area
            # resize by a fraction costs ten times as much
            small = cv2.resize(reduced, MODEL_INPUT[p.model], interpolation=cv2.INTER_LINEAR)
            if frame.pool is not None:
                prepared.pending = frame.pool.submit(self._infer_after, self._inference, small)
                self._inference = prepared.pending
            else:
                prepared.raw = self._infer(small)
        stale = self._prepared.pop(id(frame), None)  # an id reused after a failed frame
        if stale is not None:
            self._cancel(stale)
        self._prepared[id(frame)] = prepared

    def _take(self, frame: Frame) -> _Prepared:
        """What `prepare` left for `frame`; frames prepared before it that never reached `apply`
        (their chain failed on them) are dropped."""
        if id(frame) not in self._prepared:
            self.prepare(frame)
        while True:
            key, prepared = self._prepared.popitem(last=False)
            if key == id(frame):
                return prepared
            self._cancel(prepared)

    def apply(self, frame: Frame) -> None:
        prepared = self._take(frame)
        if prepared.pending is not None:
            self._raw = prepared.pending.result(timeout=5)
        elif prepared.raw is not None:
            self._raw = prepared.raw
        if not prepared.fresh:
            frame.notes.add("mask_reused")
        width, height = frame.size
        p = self.params
        reduced = prepared.reduced
        refine_size = (reduced.shape[1], reduced.shape[0])
        gray = cv2.cvtColor(reduced, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)
        raw = cv2.resize(self._raw, refine_size, interpolation=cv2.INTER_LINEAR)  # type: ignore[arg-type]
        mask = np.clip(guided_filter(gray, raw, p.refine_radius, p.refine_eps), 0.0, 1.0)
        if self._previous is not None and self._previous.shape == mask.shape and p.smoothing > 0:
            # keep the old mask only where the picture is still: motion takes the new one
            still = np.clip(1.0 - np.abs(gray - self._previous_gray) * 12.0, 0.0, 1.0)  # type: ignore[operator]
            keep = p.smoothing * still
            mask = keep * self._previous + (1.0 - keep) * mask
        self._previous, self._previous_gray = mask, gray
        low, high = p.threshold - p.feather / 2, p.threshold + p.feather / 2
        shaped = np.clip((mask - low) / (high - low), 0.0, 1.0)
        shaped = shaped * shaped * (3.0 - 2.0 * shaped)  # smoothstep: a soft, even edge
        full = cv2.resize(shaped, (width, height), interpolation=cv2.INTER_LINEAR)
        frame.set_mask(full, small=(reduced, shaped))  # reaches the device only if an effect reads it there

    @staticmethod
    def _cancel(prepared: _Prepared) -> None:
        if prepared.pending is not None:
            prepared.pending.cancel()
            try:
                prepared.pending.result(timeout=5)
            except Exception:
                pass

    def close(self) -> None:
        while self._prepared:
            self._cancel(self._prepared.popitem(last=False)[1])
        self._graph.close()
