"""Hardening: hostile bodies and request lines get a 4xx and one short log line, never a 500 or a
traceback; `edges` stays cheap on the host; a publisher that names no preset sees itself."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import livegen.effects.base
from livegen.config import EngineSettings, load_settings
from livegen.effects.base import Frame
from livegen.effects.edges import EdgesEffect
from livegen.testing.clients import WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import wait_until
from tests.test_bad_input import request

JSON = {"Content-Type": "application/json"}
DEEP = "[" * 30_000 + "]" * 30_000  # valid JSON, under server.max_body_bytes, nested past the recursion limit
HUGE_INT = '{"preset": ' + "7" * 5_000 + "}"  # over Python's 4,300-digit limit for int()


def node_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("aiohttp", "livegen"))]


async def test_bodies_that_do_not_parse_are_400_and_change_nothing(live_node, caplog):
    caplog.set_level(logging.INFO)
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)  # names no preset
    await publisher.publish(SyntheticVideoTrack(160, 120))
    assert live_node.hub.streams["cam"].preset == "passthrough"

    cases = [
        ("PATCH", "/api/streams/cam", DEEP, 400, "nests too deeply"),
        ("PATCH", "/api/streams/cam", HUGE_INT, 400, "4300 digits"),
        ("PATCH", "/api/streams/cam", '{"params": {"edges": {"strength": NaN}}}', 400, "NaN"),
        ("POST", "/api/streams/cam/outputs", DEEP, 400, "nests too deeply"),
        # valid JSON, but not the object these endpoints take: well-formed but unacceptable
        ("PATCH", "/api/streams/cam", '["edges"]', 422, "dictionary"),
        ("POST", "/api/streams/cam/outputs", '"rtmp://example.com/live"', 422, "dictionary"),
    ]
    for method, path, body, status, says in cases:
        code, headers, text = await request(live_node, method, path, data=body, headers=JSON)
        assert code == status and headers["Content-Type"].startswith("application/problem+json"), (path, text)
        detail = json.loads(text)["detail"]
        assert says in detail and len(detail) < 300, detail
    assert live_node.hub.streams["cam"].preset == "passthrough"  # the bad bodies changed nothing
    assert live_node.hub.streams["cam"].outputs.statuses() == []
    assert not [r for r in node_records(caplog) if r.exc_info or r.levelno >= logging.ERROR]

    code, _, text = await request(live_node, "PATCH", "/api/streams/cam", json={"preset": "edges"})
    assert code == 200 and json.loads(text)["preset"] == "edges"
    await publisher.close()
    await wait_until(lambda: not live_node.hub.streams)


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/api/streams/" + "a" * 20_000, {}), ("/health", {"X-Padding": "p" * 20_000})],
    ids=["url", "header"],
)
async def test_an_over_long_request_line_is_4xx_with_one_short_log_line(live_node, caplog, path, headers):
    caplog.set_level(logging.INFO)
    caplog.clear()
    code, _, _ = await request(live_node, "GET", path, headers=headers)
    assert 400 <= code < 500
    records = node_records(caplog)
    assert len(records) == 1, [r.getMessage()[:200] for r in records]
    (record,) = records
    line = record.getMessage()
    assert record.levelno == logging.WARNING and record.exc_info is None and record.exc_text is None
    assert "\n" not in line and len(line) < 300 and "LineTooLong" in line, line
    assert "Traceback" not in caplog.text

    code, _, _ = await request(live_node, "GET", "/health")
    assert code == 200  # the node still serves


def test_the_default_preset_is_passthrough():
    assert EngineSettings().default_preset == "passthrough"
    assert load_settings(env={}).engine.default_preset == "passthrough"  # configs/default.yaml agrees


def edges_reference(rgb: np.ndarray, strength: float, blend: float) -> np.ndarray:
    """What `edges` drew when it ran in float: rgb·blend + |Sobel(luma)/4|·strength, in [0, 1]."""
    image = rgb.astype(np.float64) / 255.0
    y = np.pad(image @ np.array([0.299, 0.587, 0.114]), 1, mode="edge")
    gx = (y[:-2, 2:] + 2 * y[1:-1, 2:] + y[2:, 2:] - y[:-2, :-2] - 2 * y[1:-1, :-2] - y[2:, :-2]) / 4
    gy = (y[2:, :-2] + 2 * y[2:, 1:-1] + y[2:, 2:] - y[:-2, :-2] - 2 * y[:-2, 1:-1] - y[:-2, 2:]) / 4
    magnitude = np.hypot(gx, gy)[..., None] * strength
    return np.round(np.clip(image * blend + magnitude, 0.0, 1.0) * 255.0).astype(np.uint8)


@pytest.mark.parametrize("params", [{}, {"strength": 8.0, "blend": 0.0}, {"strength": 0.5, "blend": 1.0}])
def test_edges_on_host_frames_stay_uint8_and_draw_what_the_float_version_drew(monkeypatch, params):
    def no_float_tensors(*args, **kwargs):
        raise AssertionError("edges converted a host frame to a float tensor")

    monkeypatch.setattr(livegen.effects.base, "rgb_to_tensor", no_float_tensors)
    rgb = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    rgb[20:60, 40:120] = (220, 30, 90)  # a block with hard edges on the noise
    effect = EdgesEffect.create(params)
    frame = Frame(0, rgb=rgb.copy())
    effect.apply(frame)
    assert frame.on_host and frame.rgb.dtype == np.uint8 and frame.rgb.shape == rgb.shape

    expected = edges_reference(rgb, effect.params.strength, effect.params.blend)
    error = np.abs(frame.rgb.astype(np.int16) - expected.astype(np.int16))
    # only luma's rounding to uint8 differs, magnified by `strength`
    assert error.mean() < 1.0 and error.max() <= 2 * effect.params.strength + 1, (error.mean(), error.max())
    assert np.abs(frame.rgb.astype(np.int16) - rgb).mean() > 10  # the outlines were drawn


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_edges_on_a_gpu_tensor_draw_what_the_host_path_draws():
    rgb = np.random.default_rng(1).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    effect = EdgesEffect.create({"strength": 3.0, "blend": 0.5})
    on_host = Frame(0, rgb=rgb.copy())
    effect.apply(on_host)
    on_gpu = Frame(0, image=livegen.effects.base.rgb_to_tensor(rgb, torch.device("cuda"), torch.float32))
    effect.apply(on_gpu)
    assert not on_gpu.on_host and on_gpu.image.device.type == "cuda"  # it never left the device
    error = np.abs(on_gpu.rgb.astype(np.int16) - on_host.rgb.astype(np.int16))
    assert error.mean() < 1.0 and error.max() <= 8
