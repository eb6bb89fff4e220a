"""`passthrough`: the frame as it came. The worker skips conversions for chains of only this."""

from __future__ import annotations

from livegen.effects.base import Effect, Frame


class PassthroughEffect(Effect):
    name = "passthrough"
    touches_pixels = False

    def apply(self, frame: Frame) -> None:
        pass
