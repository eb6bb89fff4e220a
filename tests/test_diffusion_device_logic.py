"""Defects of the diffusion stage's device paths, reproduced on the CPU with tiny models: CUDA
graph replays that alias their static output, and an eager UNet error retried on every frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from livegen.diffusion import tiny
from livegen.diffusion.batcher import CudaGraphUnet, DenoisingBatcher
from livegen.diffusion.models import ModelSpec, load
from livegen.effects.generation import GenerationParams
from tests.test_diffusion import pictures, settled

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def batcher(tmp_path_factory: pytest.TempPathFactory):
    folder: Path = tiny.build_folder(tmp_path_factory.mktemp("diffusion") / "tiny", seed=0)
    batcher = DenoisingBatcher(load(ModelSpec(str(folder), taesd=None), CPU, torch.float32), CPU, max_batch=2)
    yield batcher
    batcher.close()


def static_buffer_capture(call, static, warmups):
    """What a CUDA graph does, on the CPU: every replay writes into one output buffer."""
    out = call(*static).clone()

    def replay() -> None:
        out.copy_(call(*static))

    return replay, out


def _run_streams(batcher: DenoisingBatcher, count: int, frames: list[np.ndarray]) -> list[list[torch.Tensor]]:
    streams = [
        batcher.open_denoiser(GenerationParams(size=64, steps=2, seed=seed, similarity=1.0), "a harbour")
        for seed in range(count)
    ]
    for stream in streams:
        settled(stream)
    outputs: list[list[torch.Tensor]] = [[] for _ in streams]
    for picture in frames:
        tickets = [stream.submit(picture) for stream in streams]
        for index, ticket in enumerate(tickets):
            outputs[index].append(batcher.collect(ticket).clone())
    for stream in streams:
        stream.close()
    return outputs


def test_graph_replays_in_chunks_give_every_stream_its_own_rows(batcher: DenoisingBatcher) -> None:
    # 4 streams x 2 steps = 8 rows in chunks of max_batch 2: one shape replayed four times per call
    frames = pictures(3, seed=11)
    eager = _run_streams(batcher, 4, frames)
    batcher._unet = CudaGraphUnet(batcher._eager, capture=static_buffer_capture)
    try:
        graphed = _run_streams(batcher, 4, frames)
    finally:
        batcher._unet = batcher._eager
    for stream, (want, got) in enumerate(zip(eager, graphed, strict=True)):
        for index, (a, b) in enumerate(zip(want, got, strict=True)):
            assert torch.allclose(a, b, atol=1e-5), f"stream {stream} frame {index} got another stream's rows"
    # and the streams differ from one another, so a mix-up could not pass unnoticed
    assert not torch.allclose(eager[0][-1], eager[3][-1])


def test_an_eager_unet_error_is_raised_once_not_retried_or_recorded(batcher: DenoisingBatcher, monkeypatch) -> None:
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("injected UNet failure")

    monkeypatch.setattr(batcher.models.unet, "forward", broken)
    fallbacks = list(batcher.fallbacks)
    x = torch.zeros(1, batcher.latent_channels, 8, 8)
    emb = torch.zeros(1, 77, batcher.models.embedding_dim)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="injected"):
            batcher._call_unet(x, torch.full((1,), 500), emb)
    assert calls["n"] == 3  # one UNet call per frame, no retry
    assert batcher.fallbacks == fallbacks and batcher.path.endswith("eager")
