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
        assert out.shape == (3, 432, 768) and out.dtype == torch.float16 and out.is_cuda
        assert torch.isfinite(out).all()
    stream.close()
    batcher.close()


def test_cuda_graphs_match_eager(turbo_models) -> None:
    from livegen.effects.generation import GenerationParams

    params = GenerationParams(steps=1, size=512, similarity=1.0)
    results = []
    for options in ({}, {"cuda_graphs": True}):
        batcher = _batcher(turbo_models, **options)
        stream = batcher.open_denoiser(params, "a forest")
        _settle(stream)
        outs = [stream.process(f).float().cpu() for f in _frames(3)]
        results.append((batcher.path, batcher.fallbacks, outs))
        stream.close()
        batcher.close()
    (_, _, eager), (path, fallbacks, graphed) = results
    assert "cudagraph" in path or fallbacks, "CUDA graphs neither ran nor reported why not"
    for a, b in zip(eager, graphed, strict=True):
        assert torch.allclose(a, b, atol=2e-2)


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
