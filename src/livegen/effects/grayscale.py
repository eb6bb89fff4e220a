"""`grayscale`: desaturate towards Rec. 601 luma; `amount` 0 keeps colour, 1 is black and white."""

from __future__ import annotations

import torch
from pydantic import Field

from livegen.effects.base import Effect, EffectParams, Frame

LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB → (1, H, W) luma."""
    weights = torch.tensor(LUMA_WEIGHTS, device=image.device, dtype=image.dtype)
    return torch.tensordot(weights, image, dims=1).unsqueeze(0)


class GrayscaleParams(EffectParams):
    amount: float = Field(1.0, ge=0.0, le=1.0)


class GrayscaleEffect(Effect):
    name = "grayscale"
    Params = GrayscaleParams
    params: GrayscaleParams
    params_read_per_frame = True

    def apply(self, frame: Frame) -> None:
        gray = luma(frame.image).expand_as(frame.image)
        frame.image = torch.lerp(frame.image, gray, self.params.amount)
