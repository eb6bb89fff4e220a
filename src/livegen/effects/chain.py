"""An ordered chain of effects built from a preset; replaced as a whole, never edited in place."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from livegen.config import PresetSpec
from livegen.effects.base import Effect
from livegen.effects.registry import EFFECTS
from livegen.errors import Unprocessable


@dataclass(frozen=True)
class EffectChain:
    preset: str
    effects: tuple[Effect, ...]

    @property
    def touches_pixels(self) -> bool:
        return any(effect.touches_pixels for effect in self.effects)

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        for effect in self.effects:
            image = effect.apply(image)
        return image


def build_chain(preset: PresetSpec) -> EffectChain:
    """Validate every effect of `preset` and build its chain; `Unprocessable` names what is wrong."""
    effects: list[Effect] = []
    for index, spec in enumerate(preset.effects):
        cls = EFFECTS.get(spec.name)
        if cls is None:
            known = ", ".join(sorted(EFFECTS))
            raise Unprocessable(
                f"preset {preset.name!r}: effects[{index}]: unknown effect {spec.name!r} (known: {known})"
            )
        effects.append(cls.create(spec.params))
    return EffectChain(preset.name, tuple(effects))
