"""Effects outside a node, for tests and tools: a chain run on one lone picture."""

from __future__ import annotations

import torch

from livegen.effects import EffectChain, Frame


def run_on_image(chain: EffectChain, image: torch.Tensor) -> torch.Tensor:
    """`chain` on `image` ((3, H, W) in [0, 1]) as a fresh frame 0, both phases; the result."""
    frame = Frame(0, image=image)
    chain.run(frame)
    return frame.image
