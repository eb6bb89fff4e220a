"""The device path of the engine (a CUDA worker's), run on CPU tensors: the picture goes to the
device once with the mask riding along, background and overlays work there, and the result
comes back once — two copies per frame, counted in the stream's stats."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest
import torch

from livegen.config import EffectSpec, PresetSpec
from livegen.effects import build_chain
from livegen.effects.base import EffectContext, Frame
from livegen.engine.pipeline import StreamPipeline
from livegen.engine.worker import DeviceWorker

LOWER_THIRD = {"layers": [{"type": "lower_third", "title": "Ada Lovelace", "subtitle": "Analyst"}]}


def _picture(width: int = 320, height: int = 180) -> np.ndarray:
    rng = np.random.default_rng(4)
    picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    picture[:, width // 3 : 2 * width // 3] = (200, 160, 120)  # a plain block in the middle
    return picture


def test_the_mask_rides_up_with_the_picture_in_one_copy():
    picture = _picture()
    mask = np.zeros(picture.shape[:2], np.float32)
    mask[:, 100:220] = 1.0
    mask[:, 90:100] = 0.5
    frame = Frame(0, rgb=picture, device_path=True)
    frame.set_mask(mask)
    assert frame.transfers == 0  # nothing moves until an effect asks for the device form
    image, on_device = frame.image, frame.mask
    assert frame.transfers == 1  # one copy carried both
    assert torch.equal((image * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(picture))
    assert torch.allclose(on_device[0], torch.from_numpy(mask), atol=1 / 255)
    frame.image = image * 0.5
    frame.rgb  # the result comes back
    assert frame.transfers == 2


def test_a_host_frame_never_counts_copies():
    frame = Frame(0, rgb=_picture())
    frame.set_mask(np.ones((180, 320), np.float32))
    frame.image, frame.mask, frame.rgb  # noqa: B018 - conversions on the CPU are not copies
    assert frame.transfers == 0 and frame.mask.data_ptr() == torch.from_numpy(frame.mask_rgb).data_ptr()


def _run(effects: list[dict], device_path: bool, frames: int = 4,
         context: EffectContext | None = None) -> tuple[StreamPipeline, list[av.VideoFrame]]:
    outputs: list[av.VideoFrame] = []
    worker = DeviceWorker(torch.device("cpu"), shed=False)
    worker.device_path = device_path
    chain = build_chain(PresetSpec(name="t", effects=[EffectSpec(**e) for e in effects]), context)
    pipeline = StreamPipeline("cam", chain, outputs.append)
    worker.attach(pipeline)
    worker.start()
    try:
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(_picture(), format="rgb24")
            frame.pts = 1
            pipeline.submit(frame)
            deadline = time.monotonic() + 10
            while pipeline.slot and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while len(outputs) < frames and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert len(outputs) == frames
    return pipeline, outputs


@pytest.mark.parametrize(
    "effects",
    [
        [{"name": "segmentation"}, {"name": "background", "params": {"mode": "blur"}}, {"name": "overlays", "params": LOWER_THIRD}],
        [{"name": "segmentation"}, {"name": "background", "params": {"mode": "color", "color": "#204060"}}],
        # generated without a diffusion stage: its blur fallback, on the device
        [{"name": "segmentation"}, {"name": "background", "params": {"mode": "generated", "prompt": "a beach"}}],
    ],
    ids=["blur+lower-third", "colour", "generated-fallback"],
)
def test_a_device_path_chain_takes_two_copies_and_draws_what_the_host_path_draws(effects):
    pipeline, device_out = _run(effects, device_path=True)
    copies = pipeline.stats.snapshot()["device_copies_per_frame"]
    assert copies["p50"] == 2 and copies["p95"] == 2, copies
    _, host_out = _run(effects, device_path=False)
    a = device_out[-1].to_ndarray(format="rgb24").astype(np.int16)
    b = host_out[-1].to_ndarray(format="rgb24").astype(np.int16)
    assert np.abs(a - b).mean() < 6.0  # the same picture, up to blur kernels and 8-bit masks


def test_overlays_alone_stay_where_the_picture_is():
    pipeline, _ = _run([{"name": "overlays", "params": LOWER_THIRD}], device_path=True)
    assert pipeline.stats.snapshot()["device_copies_per_frame"]["p95"] == 0


def test_a_generated_background_adds_one_small_copy(tmp_path):
    from livegen.config import DiffusionSettings
    from livegen.diffusion import tiny
    from livegen.diffusion.generator import DiffusionGenerator

    folder = tiny.build_folder(tmp_path / "tiny", seed=0)
    generator = DiffusionGenerator(DiffusionSettings(model=str(folder), taesd=None, allow_cpu=True), torch.device("cpu"))
    generator.load()
    try:
        effects = [{"name": "segmentation"}, {"name": "background", "params": {
            "mode": "generated", "prompt": "a beach", "generation": {"size": 64, "steps": 1, "similarity": 1.0}}}]
        pipeline, _ = _run(effects, device_path=True, frames=8, context=EffectContext(generator=generator))
    finally:
        generator.close()
    stats = pipeline.stats.snapshot()
    assert stats["degraded"].get("background_fallback", 0) < 8  # the scene was generated ...
    assert stats["device_copies_per_frame"]["p95"] == 3  # ... with its working picture's one copy
