"""An ordered chain of effects built from a preset; replaced as a whole, never edited in place.

A chain runs a frame in the two phases of an effect: `prepare` (every effect's prepare) and
`apply` (every effect's apply, in order); `run` does both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from livegen.config import PresetSpec
from livegen.effects.base import Effect, EffectContext, Frame
from livegen.effects.registry import EFFECTS
from livegen.errors import Unprocessable


@dataclass(frozen=True)
class EffectChain:
    preset: str
    effects: tuple[Effect, ...]

    @property
    def touches_pixels(self) -> bool:
        return any(effect.touches_pixels for effect in self.effects)

    @property
    def prepares_ahead(self) -> bool:
        """Whether the next frame may be prepared before this one is applied (`Effect.prepares_ahead`)."""
        return all(effect.prepares_ahead for effect in self.effects)

    def run(self, frame: Frame) -> None:
        """Both phases on one frame: `prepare`, then `apply`."""
        self.prepare(frame)
        self.apply(frame)

    def prepare(self, frame: Frame) -> None:
        """Every effect's prepare(): work that may overlap (a CPU model, a batched GPU call).
        The worker prepares every stream's frame before it applies any, so streams that share
        a model can share a call."""
        for effect in self.effects:
            self._timed(effect, effect.prepare, frame)

    def apply(self, frame: Frame) -> None:
        """Every effect's apply(), in order; its time is added to what its prepare() took."""
        for effect in self.effects:
            self.apply_one(effect, frame)

    def apply_one(self, effect: Effect, frame: Frame) -> None:
        """One effect's apply() (the worker may serve other streams between two of them)."""
        self._timed(effect, effect.apply, frame)

    @staticmethod
    def _timed(effect: Effect, phase: Callable[[Frame], None], frame: Frame) -> None:
        t0 = time.perf_counter()
        phase(frame)
        frame.timings_ms[effect.name] = frame.timings_ms.get(effect.name, 0.0) + (time.perf_counter() - t0) * 1e3

    def close(self) -> None:
        for effect in self.effects:
            effect.close()


def build_chain(preset: PresetSpec, context: EffectContext | None = None) -> EffectChain:
    """Validate every effect of `preset` and build its chain; `Unprocessable` names what is wrong."""
    classes: list[type[Effect]] = []
    masked = False
    for index, spec in enumerate(preset.effects):
        cls = EFFECTS.get(spec.name)
        if cls is None:
            known = ", ".join(sorted(EFFECTS))
            raise Unprocessable(
                f"preset {preset.name!r}: effects[{index}]: unknown effect {spec.name!r} (known: {known})"
            )
        if cls.needs_mask and not masked:
            raise Unprocessable(
                f"preset {preset.name!r}: effects[{index}]: {spec.name!r} needs a person mask; "
                "put 'segmentation' before it"
            )
        masked = masked or spec.name == "segmentation"
        classes.append(cls)
    effects: list[Effect] = []
    try:
        for cls, spec in zip(classes, preset.effects, strict=True):
            effects.append(cls.create(spec.params, context))
    except BaseException:
        for effect in effects:  # what was built before the bad one holds models and threads
            effect.close()
        raise
    return EffectChain(preset.name, tuple(effects))
