"""Fault injection: an effect that raises on every frame, a segmentation failure, an encoder
failure, a diffusion out-of-memory. Each time the stream goes on (its picture unprocessed, or
the effect's fallback), the failures are counted, the log gets one line per interval, and the
worker lives on."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from livegen.api.keys import WORKER
from livegen.config import DiffusionSettings
from livegen.diffusion import tiny
from livegen.diffusion.generator import DiffusionGenerator
from livegen.effects.background import BackgroundEffect
from livegen.effects.base import EffectContext, Frame
from livegen.effects.grayscale import GrayscaleEffect
from livegen.effects.segmentation import SegmentationEffect
from livegen.media.encoder import VideoEncoder
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.test_bad_input import request
from tests.test_control import frames_flowing

pytestmark = pytest.mark.timeout(90)


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


async def _publish_and_watch(live_node, preset: str):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset=preset)
    await publisher.publish(SyntheticVideoTrack(320, 240))
    viewer = WhepViewer(live_node.url, "cam", live_node.http)
    await viewer.watch()
    await (await viewer.video()).recv()
    return publisher, viewer


@pytest.mark.parametrize("fault", ["effect", "segmentation"])
async def test_a_failing_effect_costs_its_frames_their_effects_not_the_stream(live_node, caplog, monkeypatch, fault):
    caplog.set_level(logging.INFO)
    if fault == "effect":
        def raising(self, frame: Frame) -> None:
            raise RuntimeError("injected effect failure")

        monkeypatch.setattr(GrayscaleEffect, "apply", raising)
        body = {"effects": [{"name": "edges"}, {"name": "grayscale"}]}
    else:
        def broken(self, small: np.ndarray) -> np.ndarray:
            raise RuntimeError("injected segmentation failure")

        monkeypatch.setattr(SegmentationEffect, "_infer", broken)
        body = {"preset": "blur"}
    publisher, viewer = await _publish_and_watch(live_node, "passthrough")
    code, _, text = await request(live_node, "PATCH", "/api/streams/cam", json=body)
    assert code == 200, text
    gap = await frames_flowing(viewer, 2.5)
    assert gap < 0.5  # the viewer kept getting pictures: the stream went on, unprocessed
    stream = live_node.hub.streams["cam"]
    info = stream.info()
    failed = info["errors"].get("effect_error", 0)
    assert failed >= 30, info["errors"]  # every frame counted ...
    assert info["frames_out"] >= failed and not info["dropped"].get("effect_error")
    assert _lines(caplog, "failed on a frame") == 1  # ... and logged once for the interval
    assert live_node.app[WORKER].running and live_node.app[WORKER].errors == 0
    # the node still processes: a chain that works takes over at once
    code, _, text = await request(live_node, "PATCH", "/api/streams/cam", json={"preset": "edges"})
    assert code == 200
    await frames_flowing(viewer, 0.5)
    settled = stream.info()["errors"].get("effect_error", 0)
    await frames_flowing(viewer, 1.0)
    assert stream.info()["errors"].get("effect_error", 0) == settled
    await viewer.close()
    await publisher.close()


async def test_an_encoder_failure_reopens_the_encoder_and_the_stream_goes_on(live_node, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    real_encode = VideoEncoder.encode
    calls = {"n": 0}

    def flaky(self, frame, keyframe):
        calls["n"] += 1
        if 20 <= calls["n"] < 50:  # thirty frames in a row fail
            raise RuntimeError("injected encoder failure")
        return real_encode(self, frame, keyframe)

    monkeypatch.setattr(VideoEncoder, "encode", flaky)
    publisher, viewer = await _publish_and_watch(live_node, "passthrough")
    await frames_flowing(viewer, 3.0)
    assert calls["n"] >= 60
    output = live_node.hub.streams["cam"].info()["output"]
    assert output["encode_errors"] == 30
    assert _lines(caplog, "encoding failed") == 1
    gap = await frames_flowing(viewer, 1.0)  # after the failures, pictures flow again
    assert gap < 0.5
    await viewer.close()
    await publisher.close()


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory):
    folder: Path = tiny.build_folder(tmp_path_factory.mktemp("diffusion") / "tiny", seed=0)
    generator = DiffusionGenerator(DiffusionSettings(model=str(folder), taesd=None, allow_cpu=True), torch.device("cpu"))
    generator.load()
    assert generator.unavailable() is None, generator.unavailable()
    yield generator
    generator.close()


def test_diffusion_out_of_memory_shows_the_fallback_and_recovers(generator, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    raw = {"mode": "generated", "prompt": "a beach", "generation": {"size": 64, "steps": 2, "similarity": 1.0}}
    effect = BackgroundEffect.create(raw, EffectContext(generator=generator))
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    mask = np.zeros((64, 96), np.float32)
    mask[:, 56:] = 1.0

    def run(index: int) -> Frame:
        frame = Frame(index, rgb=picture)
        frame.mask_rgb, frame.mask = mask, torch.from_numpy(mask)[None]
        effect.prepare(frame)
        effect.apply(frame)
        return frame

    for index in range(200):  # until the prompt is encoded and a generated picture shows
        if "background_fallback" not in run(index).notes:
            break
    else:
        pytest.fail("the generated background never showed")
    batcher = generator.batcher

    def out_of_memory(ready) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(batcher, "_run", out_of_memory)
    for index in range(200, 220):
        frame = run(index)
        assert {"diffusion_out_of_memory", "background_fallback"} <= frame.notes
        assert np.array_equal(frame.rgb[:, 56:], picture[:, 56:])  # the person is still there
    assert batcher.out_of_memory.total == 20
    assert _lines(caplog, "out of device memory") == 1
    monkeypatch.undo()
    recovered = [run(index) for index in range(220, 226)]
    assert "background_fallback" not in recovered[-1].notes
    effect.close()
