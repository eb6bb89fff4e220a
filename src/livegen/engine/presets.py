"""The presets a stream can run: loaded from YAML at start-up and checked against the effects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livegen.config import EffectSpec, PresetSpec, load_presets
from livegen.effects import EffectChain, build_chain
from livegen.effects.base import EffectContext
from livegen.errors import ConfigError, Unprocessable


class PresetLibrary:
    def __init__(self, specs: dict[str, PresetSpec], default: str, context: EffectContext | None = None):
        self.context = context or EffectContext()
        for spec in specs.values():
            try:
                build_chain(spec, self.context).close()
            except Unprocessable as exc:
                raise ConfigError(f"preset file {spec.name}.yaml: {exc.detail}") from None
        if default not in specs:
            raise ConfigError(
                f"engine.default_preset: no preset named {default!r} (have: {', '.join(sorted(specs))})"
            )
        self._specs = dict(specs)
        self.default = default

    @classmethod
    def from_folder(cls, folder: Path, default: str, context: EffectContext | None = None) -> PresetLibrary:
        return cls(load_presets(folder), default, context)

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

    def build(self, spec: PresetSpec) -> EffectChain:
        """A fresh chain for `spec`; 422 naming the bad effect or parameter. May take a while
        (models, files): call it off the event loop."""
        return build_chain(spec, self.context)

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
