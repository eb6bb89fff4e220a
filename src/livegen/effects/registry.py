"""Every effect livegen knows, by name. Adding an effect: one file, one line here."""

from __future__ import annotations

from types import MappingProxyType

from livegen.effects.background import BackgroundEffect
from livegen.effects.base import Effect
from livegen.effects.edges import EdgesEffect
from livegen.effects.grayscale import GrayscaleEffect
from livegen.effects.overlays import OverlaysEffect
from livegen.effects.passthrough import PassthroughEffect
from livegen.effects.segmentation import SegmentationEffect
from livegen.effects.stylize import StylizeEffect

EFFECTS: MappingProxyType[str, type[Effect]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (PassthroughEffect, GrayscaleEffect, EdgesEffect, SegmentationEffect, BackgroundEffect,
                    OverlaysEffect, StylizeEffect)
    }
)
