"""`stylize`: the whole frame through the diffusion stage, led by a prompt.

The effect takes the node's generator from its `EffectContext`; without one, or while the
models are missing or loading, the frame passes unchanged and the frame's notes say
`diffusion_unavailable`. `prepare` queues the frame with the engine and `apply` collects it, so
a worker that prepares several streams before applying them batches their UNet calls.

With `keep_person` and a mask from an earlier `segmentation` effect, the person stays the
camera's own pixels and only the rest of the picture is stylized. When the stream is over its
budget, or the camera is still (see `similarity`), the last output is reused.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from livegen.diffusion.generator import fit_to_frame
from livegen.diffusion.params import GenerationParams
from livegen.diffusion.stream import DiffusionStream, Ticket
from livegen.effects.base import Effect, Frame


class StylizeParams(GenerationParams):
    prompt: str = Field(min_length=1, max_length=1000)
    keep_person: bool = False
    """Composite the camera's person (from `frame.mask`) over the stylized picture."""


def composite_person(frame: Frame, styled: np.ndarray | torch.Tensor) -> None:
    """Put `styled` in the frame, with the camera's pixels wherever the mask says person."""
    if isinstance(styled, np.ndarray):
        mask = frame.mask_rgb[..., None]  # type: ignore[index]
        mixed = frame.source.astype(np.float32) * mask + styled.astype(np.float32) * (1.0 - mask)
        frame.rgb = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    else:
        source = torch.from_numpy(frame.source).to(styled.device).permute(2, 0, 1).to(styled.dtype) / 255.0
        frame.image = torch.lerp(styled, source, frame.mask.to(styled.dtype))  # type: ignore[union-attr]


class StylizeEffect(Effect):
    name = "stylize"
    Params = StylizeParams
    params: StylizeParams

    def __init__(self, params: StylizeParams, context=None):
        super().__init__(params, context)
        self._stream: DiffusionStream | None = None
        self._ticket: Ticket | None = None

    def _open(self) -> DiffusionStream | None:
        generator = self.context.generator
        if generator is None or generator.unavailable() is not None:
            return None
        if self._stream is None:
            open_stream = getattr(generator, "stream", None)
            if open_stream is None:  # a generator that only makes background scenes
                return None
            self._stream = open_stream(self.params.prompt, self.params, "stylize")
        return self._stream

    def retunable(self, params: StylizeParams) -> bool:  # type: ignore[override]
        return True  # the running stream takes a new prompt and settings at a frame boundary

    def retune(self, params: StylizeParams) -> None:  # type: ignore[override]
        self.params = params
        if self._stream is not None:
            self._stream.update(params.prompt, params)

    def prepare(self, frame: Frame) -> None:
        stream = self._open()
        if stream is not None and self._ticket is None:
            self._ticket = stream.submit(frame.source, reuse=frame.over_budget)

    def apply(self, frame: Frame) -> None:
        stream = self._open()
        ticket, self._ticket = self._ticket, None
        if stream is None:
            frame.notes.add("diffusion_unavailable")
            return
        if ticket is None:
            ticket = stream.submit(frame.source, reuse=frame.over_budget)
        output = stream.engine.collect(ticket)
        frame.notes |= ticket.notes
        if output is None:
            return
        styled = fit_to_frame(output, frame.size, frame.device)
        if self.params.keep_person and frame.mask is not None:
            composite_person(frame, styled)
        elif isinstance(styled, np.ndarray):
            frame.rgb = styled
        else:
            frame.image = styled.to(frame.dtype)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
