"""The presets a stream can run: loaded from YAML at start-up and checked against the effects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livegen.config import EffectSpec, PresetSpec, load_presets
from livegen.effects import EffectChain, build_chain
from livegen.effects.base import EffectContext
from livegen.errors import ConfigError, Unprocessable


class PresetLibrary:
    def __init__(
        self, specs: dict[str, PresetSpec], default: str, context: EffectContext | None = None, max_chain: int = 8
    ):
        self.context = context or EffectContext()
        self.max_chain = max_chain
        for spec in specs.values():
            try:
                self.build(spec).close()
            except Unprocessable as exc:
                raise ConfigError(f"preset file {spec.name}.yaml: {exc.detail}") from None
        if default not in specs:
            raise ConfigError(
                f"engine.default_preset: no preset named {default!r} (have: {', '.join(sorted(specs))})"
            )
        self._specs = dict(specs)
        self.default = default

    @classmethod
    def from_folder(
        cls, folder: Path, default: str, context: EffectContext | None = None, max_chain: int = 8
    ) -> PresetLibrary:
        return cls(load_presets(folder), default, context, max_chain)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": spec.name,
                "description": spec.description,
                "effects": [effect.model_dump() for effect in spec.effects],
            }
            for spec in (self._specs[name] for name in self.names())
        ]

    def spec(self, name: str | None) -> PresetSpec:
        """Preset `name` (the default when None); 422 if there is none."""
        name = self.default if name is None else name
        spec = self._specs.get(name)
        if spec is None:
            raise Unprocessable(
                f"unknown preset {name!r} (have: {', '.join(self.names())})",
                errors=[{"field": "preset", "message": "unknown preset"}],
            )
        return spec

    def requested(
        self,
        preset: str | None,
        effects: list[EffectSpec] | None,
        params: dict[str, dict[str, Any]] | None,
        base: PresetSpec | None = None,
    ) -> PresetSpec:
        """The chain a request asks for (a stream's PATCH, a job): `preset`, or a custom chain of
        `effects`, or else `base` (the default preset when None), then `params` merged in; 422
        naming the field for a bad combination, an unknown preset or an effect not in the chain.
        Only the names are checked here: `build` checks the effects and their parameters."""
        if preset is not None and effects is not None:
            raise Unprocessable(
                "give either preset or effects, not both",
                errors=[{"field": "effects", "message": "give either preset or effects, not both"}],
            )
        if preset is not None:
            spec = self.spec(preset)
        elif effects is not None:
            spec = PresetSpec(name="custom", description="set through the API", effects=effects)
        else:
            spec = base if base is not None else self.spec(None)
        if params:
            spec = with_params(spec, params)
        return spec

    def build(self, spec: PresetSpec) -> EffectChain:
        """A fresh chain for `spec`; 422 naming the bad effect or parameter. May take a while
        (models, files): call it off the event loop."""
        self.check_length(spec)
        return build_chain(spec, self.context)

    def check_length(self, spec: PresetSpec) -> None:
        """422 when `spec` has more effects than `engine.max_chain` allows: one stream's chain
        must not be able to take the worker from every other stream."""
        if len(spec.effects) > self.max_chain:
            raise Unprocessable(
                f"preset {spec.name!r}: {len(spec.effects)} effects; at most {self.max_chain} "
                "(engine.max_chain)",
                errors=[{"field": "effects", "message": f"at most {self.max_chain} effects"}],
            )

    def chain(self, name: str | None) -> EffectChain:
        return self.build(self.spec(name))


def with_params(spec: PresetSpec, params: dict[str, dict[str, Any]]) -> PresetSpec:
    """`spec` with some effects' parameters changed: {effect name: {param: value}} is merged
    into the first effect of that name; 422 if the chain has no such effect."""
    effects = list(spec.effects)
    errors = []
    for name, changes in params.items():
        index = next((i for i, effect in enumerate(effects) if effect.name == name), None)
        if index is None:
            errors.append({"field": f"params.{name}", "message": f"the chain has no {name!r} effect"})
            continue
        effects[index] = EffectSpec(name=name, params={**effects[index].params, **changes})
    if errors:
        raise Unprocessable("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
    return PresetSpec(name=spec.name, description=spec.description, effects=effects)
