"""The effect protocol.

An effect declares its parameters as a pydantic model; `Effect.create` validates raw parameters
before any device work and raises `Unprocessable` naming each bad field. `apply` takes and returns
a (3, H, W) float RGB tensor in [0, 1] on the worker's device, and is only ever called from the
device worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from livegen.errors import Unprocessable


class EffectParams(BaseModel):
    """Base of every effect's parameters: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Effect:
    name: ClassVar[str]
    Params: ClassVar[type[EffectParams]] = EffectParams
    touches_pixels: ClassVar[bool] = True
    """False for effects that leave the frame as it is, so the worker can skip conversions."""

    def __init__(self, params: EffectParams):
        self.params = params

    @classmethod
    def create(cls, raw: Mapping[str, Any] | None = None) -> Effect:
        try:
            params = cls.Params.model_validate(dict(raw or {}))
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or cls.name, "message": e["msg"]}
                for e in exc.errors()
            ]
            detail = "; ".join(f"{cls.name}.{e['field']}: {e['message']}" for e in errors)
            raise Unprocessable(f"invalid parameters: {detail}", errors=errors) from None
        return cls(params)

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
