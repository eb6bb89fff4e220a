"""Video effects: one effect per file, all working on device tensors; see `registry`."""

from livegen.effects.base import Effect, EffectContext, EffectParams, Frame
from livegen.effects.chain import EffectChain, build_chain
from livegen.effects.registry import EFFECTS

__all__ = ["EFFECTS", "Effect", "EffectChain", "EffectContext", "EffectParams", "Frame", "build_chain"]
