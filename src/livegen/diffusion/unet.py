"""One UNet call as the batcher makes it: the UNet with its ControlNets (`controlled_unet`),
and the same replayed from CUDA graphs (`CudaGraphUnet`).

Every form takes the same positional tensors — latents, timesteps, prompt embeddings and, for
each ControlNet named in `kinds`, its condition pictures and per-row scales — so the batcher
can swap one for another (eager, compiled, graphed) and fall back without changing its calls.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import torch

UnetCall = Callable[..., torch.Tensor]
"""(latents, timesteps, embeddings, *controls, kinds=()) → the predicted noise, where `controls`
are a condition-pictures and a scales tensor for each ControlNet named in `kinds`."""

Capture = Callable[[UnetCall, tuple[torch.Tensor, ...], int], tuple[Callable[[], None], torch.Tensor]]


class ControlInputs(NamedTuple):
    """One ControlNet's inputs for the rows of a UNet call: condition pictures (N, 3, h, w) and
    each row's residual scale (N,); rows that do not follow this kind have scale 0 (and
    `followed` False: known on the host, so a chunk of rows can skip the ControlNet)."""

    kind: str
    images: torch.Tensor
    scales: torch.Tensor
    followed: tuple[bool, ...]

    def rows(self, rows: slice) -> ControlInputs:
        return ControlInputs(self.kind, self.images[rows], self.scales[rows], self.followed[rows])


class StreamRows(NamedTuple):
    """One stream's rows of a UNet call, as its ControlNet sees them."""

    rows: int
    kind: str | None
    """The ControlNet the rows follow; None: none."""
    scale: float
    conditions: torch.Tensor | None
    """(rows, 3, h, w): each row's condition picture; None without control."""


def control_inputs(streams: list[StreamRows], device: torch.device, dtype: torch.dtype) -> list[ControlInputs]:
    """The ControlNet inputs for the rows of `streams` laid one after another: per kind followed
    (sorted: one set of kinds, one CUDA graph), every row's condition picture and scale — zero
    pictures and 0 for rows of other streams, whose residuals then add exactly nothing."""
    shape = next((s.conditions.shape[1:] for s in streams if s.conditions is not None), None)
    controls = []
    for kind in sorted({s.kind for s in streams if s.kind is not None and s.conditions is not None}):
        images, scales, followed = [], [], []
        for stream in streams:
            mine = stream.kind == kind and stream.conditions is not None
            images.append(stream.conditions if mine else torch.zeros(stream.rows, *shape, device=device, dtype=dtype))
            scales.append(torch.full((stream.rows,), stream.scale if mine else 0.0, device=device, dtype=dtype))
            followed += [mine] * stream.rows
        controls.append(ControlInputs(kind, torch.cat(images), torch.cat(scales), tuple(followed)))  # type: ignore[arg-type]
    return controls


def controlled_unet(
    unet: Any, controlnets: dict[str, Any], guidance: torch.Tensor | None, x: torch.Tensor, t: torch.Tensor,
    emb: torch.Tensor, *controls: torch.Tensor, kinds: tuple[str, ...] = (),
) -> torch.Tensor:
    """The UNet's noise prediction for rows `x` at timesteps `t` under embeddings `emb`, with
    the residuals of each ControlNet in `kinds` (run on all rows, each row's residuals times its
    scale) added to its blocks; `guidance`: an LCM UNet's guidance embedding (one row)."""
    down: list[torch.Tensor] | None = None
    mid: torch.Tensor | None = None
    for kind, images, scales in zip(kinds, controls[0::2], controls[1::2], strict=True):
        # diffusers scales by one number; each row has its own, so scale 1 and multiply here
        residuals, middle = controlnets[kind](x, t, encoder_hidden_states=emb, controlnet_cond=images, return_dict=False)
        scale = scales.view(-1, 1, 1, 1)
        residuals = [r * scale for r in residuals]
        middle = middle * scale
        down = residuals if down is None else [a + b for a, b in zip(down, residuals, strict=True)]
        mid = middle if mid is None else mid + middle
    cond = None if guidance is None else guidance.expand(x.shape[0], -1)
    return unet(x, t, encoder_hidden_states=emb, timestep_cond=cond, down_block_additional_residuals=down,
                mid_block_additional_residual=mid, return_dict=False)[0]


def capture_cuda_graph(call: UnetCall, static: tuple[torch.Tensor, ...], warmups: int) -> tuple[Callable[[], None], torch.Tensor]:
    """Capture `call` on the static inputs as a CUDA graph: (replay, the static output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmups):  # lazy init (cuDNN plans, allocator) outside the capture
            call(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread-local: the prompt thread may launch text-encoder work meanwhile
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = call(*static)
    return graph.replay, out


class CudaGraphUnet:
    """The UNet replayed from a CUDA graph captured once per set of ControlNets and input shapes:
    static buffers in (latents, timesteps, embeddings and, with ControlNets, their condition
    pictures and per-row scales), a static buffer out. Every replay overwrites that buffer, so
    each call returns a copy: a batch split into chunks replays one shape several times before
    its rows are joined."""

    def __init__(self, call: UnetCall, warmups: int = 2, capture: Capture = capture_cuda_graph):
        self._call = call
        self._warmups = warmups
        self._capture = capture
        self._graphs: dict[tuple[Any, ...], tuple[Callable[[], None], tuple[torch.Tensor, ...], torch.Tensor]] = {}

    def __call__(self, *inputs: torch.Tensor, kinds: tuple[str, ...] = ()) -> torch.Tensor:
        key = (kinds, *((tuple(i.shape), i.dtype) for i in inputs))
        entry = self._graphs.get(key)
        if entry is None:
            static = tuple(i.clone() for i in inputs)
            replay, out = self._capture(partial(self._call, kinds=kinds), static, self._warmups)
            entry = self._graphs[key] = (replay, static, out)
        replay, static, out = entry
        for buffer, value in zip(static, inputs, strict=True):
            buffer.copy_(value)
        replay()
        return out.clone()

    @property
    def shapes(self) -> int:
        return len(self._graphs)
