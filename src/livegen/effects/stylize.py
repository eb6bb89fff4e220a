"""`stylize`: the whole frame through the diffusion stage, led by a prompt.

The effect asks the node's scene generator (`EffectContext.generator`) for a scene in
`background` mode — the camera picture through img2img, every frame — and shows it in place of
the frame. Without a generator, or while the models are missing or loading, the frame passes
unchanged and the frame's notes say `diffusion_unavailable`. `prepare` queues the frame with the
generator and `apply` collects it, so a worker that prepares several streams before applying
them batches their device calls.

With `keep_person` and a mask from an earlier `segmentation` effect, the person stays the
camera's own pixels and only the rest of the picture is stylized. When the stream is over its
budget, or the camera is still, the generator reuses the last output.

With `controlnet` ("canny" or "depth") the stylized picture keeps the camera picture's edges or
depth, weighted by `controlnet_scale`; a node without that ControlNet answers 422, when the
effect is built and when it is retuned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from livegen.effects.background import composite
from livegen.effects.base import Effect, EffectContext, Frame, GeneratedScene
from livegen.effects.generation import GenerationParams


class StylizeParams(GenerationParams):
    prompt: str = Field(min_length=1, max_length=1000)
    keep_person: bool = False
    """Composite the camera's person (from `frame.mask`) over the stylized picture."""

    @property
    def scene_settings(self) -> dict[str, Any]:
        """What the generator is asked for: the generation settings, img2img on every frame."""
        return {**self.model_dump(exclude={"prompt", "keep_person"}), "mode": "background"}


class StylizeEffect(Effect):
    name = "stylize"
    Params = StylizeParams
    params: StylizeParams

    def __init__(self, params: StylizeParams, context: EffectContext | None = None):
        super().__init__(params, context)
        generator = self.context.generator
        self._scene: GeneratedScene | None = (
            generator.scene(params.prompt, params.scene_settings) if generator is not None else None
        )

    def retunable(self, params: StylizeParams) -> bool:  # type: ignore[override]
        # the running scene takes a new prompt and settings at a frame boundary, warm; what the
        # generator cannot do (a ControlNet it lacks) is a 422 now, not an error on the worker
        if self._scene is not None and hasattr(self._scene, "check"):
            self._scene.check(params.scene_settings)
        return self._scene is None or hasattr(self._scene, "update")

    def retune(self, params: StylizeParams) -> None:  # type: ignore[override]
        self.params = params
        if self._scene is not None:
            self._scene.update(params.prompt, params.scene_settings)

    def prepare(self, frame: Frame) -> None:
        if self._scene is not None and hasattr(self._scene, "prepare"):
            self._scene.prepare(frame)

    def apply(self, frame: Frame) -> None:
        if self._scene is None:
            frame.notes.add("diffusion_unavailable")
            return
        styled = self._scene.background(frame)
        frame.notes.update(getattr(self._scene, "notes", ()) or ())
        if styled is None:
            return
        if self.params.keep_person and frame.mask is not None:
            if isinstance(styled, np.ndarray):
                frame.rgb = composite(frame.source, styled, frame.mask_rgb)  # type: ignore[arg-type]
            else:  # the mask first: on the device path it carries the picture up in the same copy
                mask = frame.mask.to(styled.device, styled.dtype)
                person = frame.image.to(styled.device, styled.dtype)
                frame.image = torch.lerp(styled, person, mask)
        elif isinstance(styled, np.ndarray):
            frame.rgb = styled
        else:
            frame.image = styled.to(frame.dtype)

    def close(self) -> None:
        scene, self._scene = self._scene, None
        if scene is not None:
            scene.close()
