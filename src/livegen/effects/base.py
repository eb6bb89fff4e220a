"""The effect protocol.

An effect declares its parameters as a pydantic model; `Effect.create` validates raw parameters
before any device work and raises `Unprocessable` naming each bad field. The worker runs a chain
on one `Frame` at a time: first every effect's `prepare` (start work that can overlap, e.g. hand
a CPU model to the pool), then every effect's `apply` in order, each changing the frame in
place. Both run only on the device worker thread. An effect instance belongs to one stream, so
it may keep state from frame to frame (a mask history, a rendered overlay).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from livegen.errors import Unprocessable
from livegen.media.assets import AssetStore


@dataclass
class Frame:
    """One picture on its way through a stream's effect chain."""

    image: torch.Tensor
    """(3, H, W) float RGB in [0, 1] on the worker's device; effects replace or edit it."""
    index: int
    """Frame number within the stream."""
    source: np.ndarray | None = None
    """(H, W, 3) uint8 RGB of the input picture on the host, for CPU models; never modified."""
    mask: torch.Tensor | None = None
    """(1, H, W) float in [0, 1] on the device, 1 where the person is; set by segmentation."""
    pool: Executor | None = None
    """Small CPU thread pool for CPU-only helpers that can run beside device work."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Time each effect took on this frame (prepare + apply), by effect name."""
    notes: set[str] = field(default_factory=set)
    """What was degraded or fell back on this frame (e.g. "mask_reused"), for the stats."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.image.shape[-1], self.image.shape[-2]


class EffectParams(BaseModel):
    """Base of every effect's parameters: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Effect:
    name: ClassVar[str]
    Params: ClassVar[type[EffectParams]] = EffectParams
    touches_pixels: ClassVar[bool] = True
    """False for effects that leave the frame as it is, so the worker can skip conversions."""

    def __init__(self, params: EffectParams, assets: AssetStore | None = None):
        self.params = params
        self.assets = assets
        """Where images and videos named in the parameters are found (see media.assets)."""

    @classmethod
    def create(cls, raw: Mapping[str, Any] | None = None, assets: AssetStore | None = None) -> Effect:
        try:
            params = cls.Params.model_validate(dict(raw or {}))
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or cls.name, "message": e["msg"]}
                for e in exc.errors()
            ]
            detail = "; ".join(f"{cls.name}.{e['field']}: {e['message']}" for e in errors)
            raise Unprocessable(f"invalid parameters: {detail}", errors=errors) from None
        return cls(params, assets=assets)

    def prepare(self, frame: Frame) -> None:
        """Start work for `frame` that can overlap the effects before this one (optional)."""

    def apply(self, frame: Frame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the effect holds (models, threads); called when its chain is replaced."""
