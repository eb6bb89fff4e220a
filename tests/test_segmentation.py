"""Person segmentation with the real MediaPipe model on a real person photo (see testing.scenes)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from livegen.config import EffectSpec, PresetSpec
from livegen.effects import build_chain
from livegen.effects.base import Frame
from livegen.effects.segmentation import SegmentationEffect, guided_filter
from livegen.errors import Unprocessable
from livegen.testing.scenes import compose_scene, known_background, sensor_noise

SIZE = (1280, 720)
FLICKER_LIMIT = 0.001
"""Mean frame-to-frame change of the mask (0–1 per pixel) allowed on a still scene with camera
noise; measured ≈ 0.0001 with smoothing and ≈ 0.0003 without."""


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    found = mask > 0.5
    return float((found & truth).sum() / (found | truth).sum())


def run(effect: SegmentationEffect, index: int, picture: np.ndarray, **frame_args) -> Frame:
    frame = Frame(index, rgb=picture, **frame_args)
    effect.prepare(frame)
    effect.apply(frame)
    return frame


@pytest.fixture
def effect():
    made = SegmentationEffect.create({})
    yield made
    made.close()


@pytest.mark.parametrize("kind", ["stripes", "gradient", "noise", "flat"])
def test_mask_finds_the_person_over_any_background(effect, kind):
    scene, truth = compose_scene(known_background(SIZE, kind))
    frame = run(effect, 0, scene)
    assert frame.mask_rgb.shape == (720, 1280) and frame.mask_rgb.dtype == np.float32
    assert 0.0 <= frame.mask_rgb.min() and frame.mask_rgb.max() <= 1.0
    assert iou(frame.mask_rgb, truth) >= 0.88
    assert frame.mask.shape == (1, 720, 1280)
    np.testing.assert_array_equal(frame.source, scene)  # the picture is left alone
    assert frame.rgb is frame.source


def test_the_small_copy_is_the_input_and_the_mask_at_refine_size(effect):
    """`frame.small`, which a blurred background starts from: the input reduced to
    `refine_width`, and the mask there that the full-size mask is upsampled from."""
    picture, _ = compose_scene(known_background(SIZE, "stripes"))
    frame = run(effect, 0, picture)
    small_picture, small_mask = frame.small
    assert small_picture.shape == (180, 320, 3) and small_mask.shape == (180, 320)
    assert np.abs(small_picture.astype(float) - cv2.resize(picture, (320, 180), interpolation=cv2.INTER_AREA)).mean() < 1
    upsampled = cv2.resize(small_mask, SIZE, interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(upsampled, frame.mask_rgb)


def test_guided_filter_pulls_a_soft_mask_edge_onto_the_picture_edge():
    """The refinement step: a blurry mask edge over a sharp picture edge comes out sharp, at the
    picture's edge."""
    guide = np.zeros((64, 200), np.float32)
    guide[:, 100:] = 1.0
    ramp = np.clip((np.arange(200, dtype=np.float32) - 92.0) / 10.0, 0.0, 1.0)  # soft, off-centre
    soft = np.tile(ramp, (64, 1))
    refined = np.clip(guided_filter(guide, soft, 4, 1e-3), 0.0, 1.0)
    steps = np.diff(refined[32])
    assert int(np.argmax(steps)) == 99  # the mask's edge now sits on the picture's edge
    assert steps.max() > 0.3 > np.diff(soft[32]).max()  # and is a step, not a ramp


def test_still_scene_does_not_flicker(effect):
    scene, _ = compose_scene(known_background(SIZE, "stripes"))
    rng = np.random.default_rng(7)
    raw = SegmentationEffect.create({"smoothing": 0.0})
    try:
        changes, raw_changes = [], []
        previous = previous_raw = None
        for index in range(12):
            noisy = sensor_noise(scene, 4.0, rng)
            mask = run(effect, index, noisy).mask_rgb
            mask_raw = run(raw, index, noisy).mask_rgb
            if previous is not None:
                changes.append(float(np.abs(mask - previous).mean()))
                raw_changes.append(float(np.abs(mask_raw - previous_raw).mean()))
            previous, previous_raw = mask, mask_raw
    finally:
        raw.close()
    assert max(changes) < FLICKER_LIMIT
    assert np.mean(changes) < np.mean(raw_changes)  # the smoothing is what keeps it still


def test_moving_person_leaves_no_trail(effect):
    background = known_background(SIZE, "gradient")
    left, _ = compose_scene(background, center_x=0.35)
    right, truth_right = compose_scene(background, center_x=0.6)
    for index in range(5):
        run(effect, index, left)
    mask = run(effect, 5, right).mask_rgb  # the first frame after a big, sudden move
    assert iou(mask, truth_right) >= 0.85
    vacated = compose_scene(background, center_x=0.35)[1] & ~truth_right
    assert mask[vacated].mean() < 0.1  # where the person was is background again at once


def test_every_n_frames_reuses_the_mask():
    scene, truth = compose_scene(known_background(SIZE, "flat"))
    effect = SegmentationEffect.create({"every_n_frames": 3})
    calls = []
    infer = effect._infer
    effect._infer = lambda small: calls.append(1) or infer(small)
    try:
        notes = [run(effect, index, scene).notes for index in range(6)]
    finally:
        effect.close()
    assert len(calls) == 2
    assert ["mask_reused" in n for n in notes] == [False, True, True, False, True, True]


def test_over_budget_frames_reuse_the_mask(effect):
    scene, truth = compose_scene(known_background(SIZE, "flat"))
    first = run(effect, 0, scene)
    late = run(effect, 1, scene, over_budget=True)
    assert "mask_reused" not in first.notes and "mask_reused" in late.notes
    assert iou(late.mask_rgb, truth) >= 0.88


def test_inference_in_the_pool_matches_inline():
    scene, _ = compose_scene(known_background(SIZE, "stripes"))
    inline = SegmentationEffect.create({"smoothing": 0.0})
    pooled = SegmentationEffect.create({"smoothing": 0.0})
    with ThreadPoolExecutor(2) as pool:
        try:
            a = run(inline, 0, scene).mask_rgb
            b = run(pooled, 0, scene, pool=pool).mask_rgb
        finally:
            inline.close()
            pooled.close()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_threshold_and_feather_shape_the_edge(effect):
    scene, _ = compose_scene(known_background(SIZE, "flat"))
    soft = run(effect, 0, scene).mask_rgb
    hard_effect = SegmentationEffect.create({"feather": 0.02})
    wide_effect = SegmentationEffect.create({"threshold": 0.2})
    try:
        hard = run(hard_effect, 0, scene).mask_rgb
        wide = run(wide_effect, 0, scene).mask_rgb
    finally:
        hard_effect.close()
        wide_effect.close()
    between = lambda m: float(((m > 0.05) & (m < 0.95)).mean())  # noqa: E731
    assert between(hard) < between(soft)  # a narrow feather is a crisper edge
    assert (wide > 0.5).sum() > (soft > 0.5).sum()  # a lower threshold takes in more


@pytest.mark.parametrize(
    "params, field",
    [({"threshold": 1.5}, "threshold"), ({"model": "fancy"}, "model"), ({"every_n_frames": 0}, "every_n_frames"),
     ({"fast": True}, "fast")],
)
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(Unprocessable) as caught:
        SegmentationEffect.create(params)
    assert [e["field"] for e in caught.value.extra["errors"]] == [field]


def test_chain_needs_segmentation_before_a_masked_effect():
    from livegen.effects.base import Effect
    from livegen.effects.registry import EFFECTS

    masked = [name for name, cls in EFFECTS.items() if cls.needs_mask]
    if not masked:
        pytest.skip("no effect reads the mask yet")
    with pytest.raises(Unprocessable, match="segmentation"):
        build_chain(PresetSpec(name="bad", effects=[EffectSpec(name=masked[0])]))
    assert issubclass(EFFECTS["segmentation"], Effect)
