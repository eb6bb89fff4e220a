"""`passthrough`: the frame as it came. The worker skips conversions for chains of only this."""

from __future__ import annotations

import torch

from livegen.effects.base import Effect


class PassthroughEffect(Effect):
    name = "passthrough"
    touches_pixels = False

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        return image
