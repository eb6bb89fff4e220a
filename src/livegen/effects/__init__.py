"""Video effects: one effect per file, all working on one `Frame` at a time; see `registry`.

Effects reach the diffusion stage only through `base.SceneGenerator` on their `EffectContext`:
this package imports nothing from `livegen.diffusion`, which implements that protocol.
"""

from livegen.effects.base import Effect, EffectContext, EffectParams, Frame
from livegen.effects.chain import EffectChain, build_chain
from livegen.effects.registry import EFFECTS

__all__ = ["EFFECTS", "Effect", "EffectChain", "EffectContext", "EffectParams", "Frame", "build_chain"]
