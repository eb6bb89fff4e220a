"""Video effects: one effect per file, all working on one `Frame` at a time; see `registry`.

The chain and the registry are imported on first use: effects living in other packages (the
diffusion stage's `stylize`) import `livegen.effects.base`, and the registry imports them.
"""

from typing import TYPE_CHECKING, Any

from livegen.effects.base import Effect, EffectContext, EffectParams, Frame

if TYPE_CHECKING:
    from livegen.effects.chain import EffectChain, build_chain
    from livegen.effects.registry import EFFECTS

__all__ = ["EFFECTS", "Effect", "EffectChain", "EffectContext", "EffectParams", "Frame", "build_chain"]


def __getattr__(name: str) -> Any:
    if name in ("EffectChain", "build_chain"):
        from livegen.effects import chain

        return getattr(chain, name)
    if name == "EFFECTS":
        from livegen.effects.registry import EFFECTS

        return EFFECTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
