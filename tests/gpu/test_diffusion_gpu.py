"""The diffusion stage on CUDA at full size: random weights of the real sd-turbo architecture
(latency and numerics do not depend on weight values; nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def turbo_models():
    from livegen.diffusion.tiny import build_models

    return build_models("sd-turbo", seed=0)


def _batcher(models, **options):
    from livegen.diffusion.batcher import DenoisingBatcher

    return DenoisingBatcher(models, CUDA, **options)


def _frames(count: int, size=(512, 512)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(count)]


def _settle(stream) -> None:
    assert stream.conditioning.wait(30.0) is not None


def test_fp16_channels_last_outputs_are_finite(turbo_models) -> None:
    from livegen.effects.generation import GenerationParams

    batcher = _batcher(turbo_models)
    assert batcher.path == "cuda fp16 channels-last eager"
    stream = batcher.open_denoiser(GenerationParams(steps=2, size=512, similarity=1.0), "a beach")
    _settle(stream)
    for frame in _frames(4, (768, 432)):
        out = stream.process(frame)
        # the stage works at `size` on the long side (16:9 kept); effects fit it to the frame
        assert out.shape == (3, 288, 512) and out.dtype == torch.float16 and out.is_cuda
        assert torch.isfinite(out).all()
    stream.close()
    batcher.close()


def test_cuda_graphs_match_eager_for_every_stream_of_a_chunked_batch(turbo_models) -> None:
    """4 streams x 2 steps = 8 rows, replayed in chunks of 4: each stream must get its own rows,
    and the graphs must really run (a silent fallback to eager fails the test)."""
    from livegen.effects.generation import GenerationParams

    frames = _frames(3)
    results = []
    for options in ({}, {"cuda_graphs": True}):
        batcher = _batcher(turbo_models, max_batch=4, **options)
        streams = [batcher.open_denoiser(GenerationParams(steps=2, size=512, seed=i, similarity=1.0), "a forest")
                   for i in range(4)]
        for stream in streams:
            _settle(stream)
        outs: list[list[torch.Tensor]] = [[] for _ in streams]
        for frame in frames:
            tickets = [s.submit(frame) for s in streams]
            for index, ticket in enumerate(tickets):
                outs[index].append(batcher.collect(ticket).float().cpu())
        results.append((batcher.path, list(batcher.fallbacks), outs))
        for stream in streams:
            stream.close()
        batcher.close()
    (_, _, eager), (path, fallbacks, graphed) = results
    assert "cudagraph" in path and not fallbacks, (path, fallbacks)
    for stream, (want, got) in enumerate(zip(eager, graphed, strict=True)):
        for a, b in zip(want, got, strict=True):
            assert torch.allclose(a, b, atol=2e-2), f"stream {stream} differs from eager"
    assert not torch.allclose(eager[0][-1], eager[3][-1], atol=2e-2)


def test_four_streams_share_one_unet_call(turbo_models) -> None:
    from livegen.effects.generation import GenerationParams

    batcher = _batcher(turbo_models)
    streams = [batcher.open_denoiser(GenerationParams(steps=1, size=512, seed=i, similarity=1.0), "a city")
               for i in range(4)]
    for stream in streams:
        _settle(stream)
    frame = _frames(1)[0]
    before = batcher.unet_calls
    tickets = [s.submit(frame) for s in streams]
    outs = [batcher.collect(t) for t in tickets]
    assert batcher.unet_calls - before == 1 and all(o is not None for o in outs)
    for stream in streams:
        stream.close()
    batcher.close()


def test_bench_runs_on_the_gpu(tmp_path) -> None:
    from livegen.bench.diffusion import DiffusionBenchOptions, run_diffusion_bench

    result = run_diffusion_bench(
        DiffusionBenchOptions(sizes=((512, 512),), steps=(1,), streams=(1,), modes=("eager",), frames=5,
                              warmup=2, output=tmp_path), log=lambda *_: None,
    )
    assert result["machine"]["gpu"] and result["cases"][0]["parts_ms"]["unet"]["p50"] > 0
