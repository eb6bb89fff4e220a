"""Background replacement: every mode against a known mask, then with the real model on a real
person photo (the quality test of the effects issue)."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import torch

from livegen.config import EffectSpec, PresetSpec
from livegen.effects import build_chain
from livegen.effects.background import BackgroundEffect, cover_fit, masked_blur, masked_blur_tensor
from livegen.effects.base import EffectContext, Frame
from livegen.errors import Unprocessable
from livegen.media.assets import AssetStore
from livegen.resources import bundled_dir
from livegen.testing.scenes import compose_scene, erode, known_background, region_ssim

W, H = 640, 360
OFFICE = "backgrounds/office.jpg"


@pytest.fixture
def context(tmp_path):
    return EffectContext(assets=AssetStore(tmp_path / "uploads", bundled_dir("configs") / "assets"))


def person_frame(index: int = 0, soft: float = 0.0) -> tuple[Frame, np.ndarray]:
    """A bright 'person' rectangle on a striped room, with its mask set as segmentation would."""
    picture = known_background((W, H), "stripes")
    mask = np.zeros((H, W), np.float32)
    mask[100:, 240:400] = 1.0
    picture[100:, 240:400] = (250, 240, 230)
    if soft:
        mask = cv2.GaussianBlur(mask, (0, 0), soft)
    frame = Frame(index, rgb=picture)
    frame.mask_rgb, frame.mask = mask, torch.from_numpy(mask)[None]
    return frame, mask


def run(effect: BackgroundEffect, frame: Frame) -> np.ndarray:
    effect.prepare(frame)
    effect.apply(frame)
    return frame.rgb


def test_colour_and_key_replace_only_the_background(context):
    for params, colour in (({"mode": "color", "color": "#102030"}, (16, 32, 48)),
                           ({"mode": "transparent"}, (0, 255, 0))):
        frame, mask = person_frame()
        source = frame.source.copy()
        out = run(BackgroundEffect.create(params, context), frame)
        assert (out[mask == 1] == source[mask == 1]).all()  # the person is the camera's pixels
        assert (out[mask == 0] == colour).all()
        np.testing.assert_array_equal(frame.source, source)  # the input is never written to


def test_image_is_cover_fitted(context):
    office = cv2.cvtColor(cv2.imread(str(bundled_dir("configs") / "assets" / OFFICE)), cv2.COLOR_BGR2RGB)
    frame, mask = person_frame()
    out = run(BackgroundEffect.create({"mode": "image", "image": OFFICE}, context), frame)
    expected = cover_fit(office, W, H)
    assert np.abs(out[mask == 0].astype(int) - expected[mask == 0]).max() <= 1
    # cover, not stretch: a tall picture on a wide frame is cropped top and bottom
    tall = np.zeros((400, 100, 3), np.uint8)
    tall[:, :, 0] = np.linspace(0, 255, 400)[:, None]
    fitted = cover_fit(tall, 200, 100)
    assert fitted.shape == (100, 200, 3) and 60 < fitted[0, 0, 0] < 200  # the middle band, scaled


def test_blur_keeps_the_person_out_of_the_background(context):
    """No halo: background pixels next to a bright person stay as dark as the room around them."""
    frame, mask = person_frame(soft=1.5)
    dark = np.full((H, W, 3), 20, np.uint8)
    dark[100:, 240:400] = 250  # a bright person in a dark room
    frame = Frame(0, rgb=dark.copy())
    frame.mask_rgb, frame.mask = mask, torch.from_numpy(mask)[None]
    out = run(BackgroundEffect.create({"mode": "blur", "blur": 18}, context), frame)
    beside = out[200:300, 226:236].astype(float)  # 4–14 px left of the person's edge
    naive = cv2.GaussianBlur(dark, (0, 0), 18 * H / 720)[200:300, 226:236].astype(float)
    assert beside.mean() < 25 and naive.mean() > 50  # a naive blur glows with the person
    assert (out[mask == 1] == dark[mask == 1]).all()


def test_blur_blurs(context):
    frame, mask = person_frame()
    stripes = np.random.default_rng(0).integers(0, 256, (H, W, 3)).astype(np.uint8)  # fine detail
    frame = Frame(0, rgb=stripes.copy())
    frame.mask_rgb, frame.mask = mask, torch.from_numpy(mask)[None]
    out = run(BackgroundEffect.create({"mode": "blur", "blur": 24}, context), frame)
    room = mask == 0
    assert np.abs(np.diff(out.astype(float), axis=1))[room[:, 1:]].mean() < 0.3 * np.abs(
        np.diff(stripes.astype(float), axis=1))[room[:, 1:]].mean()


def test_device_path_matches_the_host_path():
    picture = known_background((W, H), "noise")
    mask = np.zeros((H, W), np.float32)
    mask[80:, 200:420] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), 2)
    host = masked_blur(picture, mask, 18)
    image = torch.from_numpy(picture).permute(2, 0, 1).float() / 255
    device = (masked_blur_tensor(image, torch.from_numpy(mask)[None], 18).permute(1, 2, 0).numpy() * 255).round()
    room = mask < 0.01
    assert np.abs(host.astype(float) - device)[room].mean() < 4  # pyramid vs area downsampling

    effect = BackgroundEffect.create({"mode": "color", "color": "#ff8000"})
    frame = Frame(0, image=image.clone())  # the picture lives as a tensor, as on a GPU
    frame.mask_rgb, frame.mask = mask, torch.from_numpy(mask)[None]
    effect._apply_device(frame, "color", None)
    out = frame.rgb.astype(int)
    assert np.abs(out[room] - (255, 128, 0)).max() <= 2
    assert np.abs(out[mask > 0.99] - picture[mask > 0.99]).max() <= 2


def test_video_loops_on_its_own_thread_and_stops(context):
    effect = BackgroundEffect.create({"mode": "video", "video": "backgrounds/loop.mp4"}, context)
    seen = []
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(seen) < 80:
            frame, mask = person_frame()
            out = run(effect, frame)
            seen.append(out[20, 20].copy())
            time.sleep(0.04)
        assert effect._video.frames_decoded > 72  # past the end of the 72-frame file: it looped
        assert len({tuple(p) for p in seen}) > 10  # the picture moves
    finally:
        effect.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("livegen-video")]


class FakeScene:
    def __init__(self):
        self.closed = False
        self.prompts = []

    def background(self, frame):
        width, height = frame.size
        return np.full((height, width, 3), (200, 10, 10), np.uint8)

    def update(self, prompt, params):
        self.prompts.append(prompt)

    def close(self):
        self.closed = True


class FakeGenerator:
    def __init__(self, reason=None):
        self.reason = reason
        self.scenes = []

    def unavailable(self):
        return self.reason

    def scene(self, prompt, params):
        self.scenes.append(FakeScene())
        return self.scenes[-1]


def test_generated_uses_the_scene_and_falls_back_visibly(tmp_path):
    assets = AssetStore(tmp_path, bundled_dir("configs") / "assets")
    params = {"mode": "generated", "prompt": "a beach", "fallback": "color", "color": "#000000"}

    generator = FakeGenerator()
    effect = BackgroundEffect.create(params, EffectContext(assets, generator))
    frame, mask = person_frame()
    out = run(effect, frame)
    assert (out[mask == 0] == (200, 10, 10)).all() and "background_fallback" not in frame.notes
    assert effect.retunable(effect.Params.model_validate({**params, "prompt": "a forest"}))
    effect.retune(effect.Params.model_validate({**params, "prompt": "a forest"}))
    assert generator.scenes[0].prompts == ["a forest"]  # a new prompt reaches the running scene
    effect.close()
    assert generator.scenes[0].closed

    for context in (EffectContext(assets, None), EffectContext(assets, FakeGenerator("no GPU"))):
        effect = BackgroundEffect.create(params, context)
        frame, mask = person_frame()
        out = run(effect, frame)
        assert (out[mask == 0] == 0).all() and "background_fallback" in frame.notes
        effect.close()


@pytest.mark.parametrize(
    "params, field",
    [
        ({"mode": "image"}, "image"),
        ({"mode": "image", "image": "backgrounds/nope.jpg"}, "image"),
        ({"mode": "video", "video": "upload:" + "0" * 32}, "video"),
        ({"mode": "color", "color": "red"}, "color"),
        ({"mode": "generated"}, "prompt"),
        ({"mode": "plaid"}, "mode"),
        ({"blur": 0}, "blur"),
    ],
)
def test_bad_parameters_are_named(context, params, field):
    with pytest.raises(Unprocessable) as caught:
        BackgroundEffect.create(params, context)
    assert field in caught.value.detail


def test_a_chain_must_segment_before_replacing():
    with pytest.raises(Unprocessable, match="segmentation"):
        build_chain(PresetSpec(name="bad", effects=[EffectSpec(name="background")]))


@pytest.mark.parametrize("kind", ["stripes", "noise"])
def test_image_replacement_with_the_real_model(context, kind):
    """The quality test: the astronaut over a known room; after `image` replacement the room is
    the new image and the person keeps SSIM ≥ 0.9 against the input."""
    scene, truth = compose_scene(known_background((1280, 720), kind))
    chain = build_chain(
        PresetSpec(name="office", effects=[
            EffectSpec(name="segmentation"),
            EffectSpec(name="background", params={"mode": "image", "image": OFFICE}),
        ]),
        context,
    )
    try:
        frame = Frame(0, rgb=scene)
        chain.run(frame)
    finally:
        chain.close()
    office = cv2.cvtColor(cv2.imread(str(bundled_dir("configs") / "assets" / OFFICE)), cv2.COLOR_BGR2RGB)
    expected = cover_fit(office, 1280, 720)
    room = erode(~truth, 12)
    person = erode(truth, 12)
    matches = np.abs(frame.rgb.astype(int) - expected).max(axis=2) <= 8
    assert matches[room].mean() > 0.97
    assert region_ssim(frame.rgb, scene, person) >= 0.9
