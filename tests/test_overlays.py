"""Broadcast overlays: pixels land where configured, blend as configured, redraw only on change."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from livegen.effects.base import EffectContext, Frame
from livegen.effects.overlays import OverlaysEffect, countdown_text
from livegen.effects.sprites import place
from livegen.errors import Unprocessable
from livegen.media.assets import AssetStore
from livegen.resources import bundled_dir

W, H = 1280, 720


@pytest.fixture
def context(tmp_path):
    return EffectContext(assets=AssetStore(tmp_path / "uploads", bundled_dir("configs") / "assets"))


def black(width: int = W, height: int = H) -> np.ndarray:
    return np.zeros((height, width, 3), np.uint8)


def render(effect: OverlaysEffect, picture: np.ndarray | None = None, index: int = 0) -> np.ndarray:
    frame = Frame(index, rgb=black() if picture is None else picture)
    effect.prepare(frame)
    effect.apply(frame)
    return frame.rgb


def box_layer(anchor: str, **extra) -> dict:
    """A solid white box of known size: a text layer whose box is opaque white on white text."""
    return {"type": "text", "text": "X", "size": 40, "color": "#ffffff", "box": "#ffffff", "anchor": anchor,
            "offset": [20, 30], **extra}


def ink(out: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(out.max(axis=2) > 0)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize(
    "anchor, where",
    [
        ("top-left", lambda x0, y0, x1, y1: (x0, y0) == (20, 30)),
        ("top-right", lambda x0, y0, x1, y1: (W - x1, y0) == (20, 30)),
        ("bottom-left", lambda x0, y0, x1, y1: (x0, H - y1) == (20, 30)),
        ("bottom-right", lambda x0, y0, x1, y1: (W - x1, H - y1) == (20, 30)),
        ("top", lambda x0, y0, x1, y1: abs((x0 + x1) / 2 - (W / 2 + 20)) <= 1 and y0 == 30),
        ("center", lambda x0, y0, x1, y1: abs((x0 + x1) / 2 - (W / 2 + 20)) <= 1
         and abs((y0 + y1) / 2 - (H / 2 + 30)) <= 1),
    ],
)
def test_layers_land_at_their_anchor(context, anchor, where):
    out = render(OverlaysEffect.create({"layers": [box_layer(anchor)]}, context))
    x0, y0, x1, y1 = ink(out)
    assert where(x0, y0, x1, y1), (anchor, (x0, y0, x1, y1))
    assert (out[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3] == 255).all()  # solid inside (rounded corners aside)
    assert out.sum() == out[y0:y1, x0:x1].sum()  # nothing outside the box


def test_sizes_scale_with_the_frame_height(context):
    effect = OverlaysEffect.create({"layers": [box_layer("top-left")]}, context)
    x0, y0, x1, y1 = ink(render(effect, black(640, 360)))
    X0, Y0, X1, Y1 = ink(render(effect, black(1280, 720)))
    assert (x0, y0) == (10, 15) and (X0, Y0) == (20, 30)
    assert abs((X1 - X0) - 2 * (x1 - x0)) <= 2


def test_opacity_and_z_order(context):
    half = OverlaysEffect.create({"layers": [box_layer("top-left", opacity=0.5)]}, context)
    out = render(half)
    x0, y0, x1, y1 = ink(out)
    assert abs(int(out[(y0 + y1) // 2, (x0 + x1) // 2, 0]) - 128) <= 1  # 50 % white over black

    red = {**box_layer("top-left"), "box": "#ff0000", "color": "#ff0000"}
    blue = {**box_layer("top-left"), "box": "#0000ff", "color": "#0000ff"}
    middle = ((y0 + y1) // 2, (x0 + x1) // 2)
    top_blue = render(OverlaysEffect.create({"layers": [{**blue, "z": 2}, {**red, "z": 1}]}, context))
    assert tuple(top_blue[middle]) == (0, 0, 255)
    top_red = render(OverlaysEffect.create({"layers": [{**blue, "z": 1}, {**red, "z": 1}]}, context))
    assert tuple(top_red[middle]) == (255, 0, 0)  # equal z: list order
    hidden = render(OverlaysEffect.create({"layers": [{**red, "visible": False}]}, context))
    assert hidden.max() == 0


def test_logo_alpha_is_respected(context):
    picture = np.full((H, W, 3), 60, np.uint8)
    out = render(OverlaysEffect.create({"layers": [
        {"type": "image", "image": "logos/livegen.png", "anchor": "top-left", "offset": [0, 0], "width": 256}]},
        context), picture.copy())
    assert (out[0, 0] == 60).all()  # the badge's transparent corner leaves the frame alone
    assert (out[40, 20:40] != 60).any()  # its opaque body covers it
    assert (out[100:, :] == 60).all()  # nothing below the logo's 80 rows


def test_clock_redraws_only_when_its_text_changes(context):
    effect = OverlaysEffect.create({"layers": [{"type": "clock", "format": "%H:%M:%S", "timezone": "UTC"}]},
                                   context)
    base = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()
    frames = []
    for tick in range(60):  # 2 s at 30 fps
        effect.clock = lambda tick=tick: base + tick / 30
        frames.append(render(effect, index=tick))
    assert effect.renders == 2
    assert not np.array_equal(frames[0], frames[-1]) and np.array_equal(frames[0], frames[29])


def test_countdown_text_and_done():
    assert countdown_text(3723.2, "%H:%M:%S", "LIVE") == "01:02:04"
    assert countdown_text(90061, "%Dd %H:%M:%S", "LIVE") == "1d 01:01:01"
    assert countdown_text(90061, "%H:%M", "LIVE") == "25:01"
    assert countdown_text(0, "%H:%M:%S", "On air") == "On air"


def test_countdown_counts_down_from_start(context):
    effect = OverlaysEffect.create({"layers": [{"type": "countdown", "seconds": 10}]}, context)
    start = effect._started
    effect.clock = lambda: start + 3.5
    render(effect)
    assert effect._sprites[0][0][1] == "00:00:07"
    effect.clock = lambda: start + 11
    render(effect)
    assert effect._sprites[0][0][1] == "LIVE"


def test_ticker_scrolls_at_its_speed_without_redrawing(context):
    effect = OverlaysEffect.create({"layers": [{"type": "ticker", "text": "breaking news", "speed": 120}]}, context)
    start = effect._started
    effect.clock = lambda: start
    first = render(effect)
    effect.clock = lambda: start + 0.5
    later = render(effect)
    band = first[H - 60 :, :, 0].astype(int)
    moved = later[H - 60 :, :, 0].astype(int)
    shifts = [np.abs(band[:, 60 + s : 700 + s] - moved[:, 60:700]).mean() for s in range(0, 120)]
    assert int(np.argmin(shifts)) == 60  # 120 px/s × 0.5 s, right to left
    assert effect.renders == 1


def test_any_utf8_renders_and_missing_glyphs_do_not_fail(context):
    for text in ("Grüße – Привет – Ελλάδα", "東京 🎥 \u0000x"):
        out = render(OverlaysEffect.create({"layers": [
            {"type": "text", "text": text, "box": None, "color": "#ffffff"}]}, context))
        assert (out > 200).sum() > 100


def test_lower_third_has_a_bar_with_two_lines(context):
    out = render(OverlaysEffect.create({"layers": [
        {"type": "lower_third", "title": "Ada Lovelace", "subtitle": "Analyst", "bar_color": "#102030",
         "accent_color": "#ff0000", "offset": [48, 56]}]}, context))
    x0, y0, x1, y1 = ink(out)
    assert (x0, H - y1) == (48, 56) and x1 - x0 >= 560
    assert tuple(out[(y0 + y1) // 2, x0 + 2]) == (255, 0, 0)  # the accent stripe
    assert (out[y0 + 2, x1 - 5] == (16, 32, 48)).all()  # the bar


def test_device_blend_matches_the_host_blend(context):
    effect = OverlaysEffect.create({"layers": [
        {"type": "lower_third", "title": "Ada", "subtitle": "Analyst"},
        {"type": "image", "image": "logos/livegen.png", "opacity": 0.7},
        {"type": "ticker", "text": "news"},
    ]}, context)
    effect.clock = lambda: effect._started + 1.25  # the same ticker position for both
    picture = np.random.default_rng(1).integers(0, 256, (H, W, 3)).astype(np.uint8)
    host = render(effect, picture.copy())
    frame = Frame(0, image=torch.from_numpy(picture).permute(2, 0, 1).float() / 255)  # a tensor, as on a GPU
    assert not frame.on_host
    effect.apply(frame)
    assert not frame.on_host  # blended in torch
    assert np.abs(frame.rgb.astype(int) - host).max() <= 2


def test_the_source_picture_is_never_written(context):
    picture = np.full((H, W, 3), 30, np.uint8)
    frame = Frame(0, rgb=picture)
    OverlaysEffect.create({"layers": [box_layer("center")]}, context).apply(frame)
    assert (picture == 30).all() and frame.rgb.max() == 255


@pytest.mark.parametrize(
    "layer, field",
    [
        ({"type": "text"}, "text"),
        ({"type": "text", "text": "x", "anchor": "middle"}, "anchor"),
        ({"type": "text", "text": "x", "opacity": 2}, "opacity"),
        ({"type": "text", "text": "x", "color": "white"}, "color"),
        ({"type": "clock", "timezone": "Mars/Olympus"}, "timezone"),
        ({"type": "countdown"}, "countdown"),
        ({"type": "image", "image": "logos/none.png"}, "layers.0.image"),
        ({"type": "text", "text": "x", "font": "fonts/none.ttf"}, "layers.0.font"),
        ({"type": "sparkles"}, "type"),
    ],
)
def test_bad_layers_are_named(context, layer, field):
    with pytest.raises(Unprocessable) as caught:
        OverlaysEffect.create({"layers": [layer]}, context)
    assert field in caught.value.detail


def test_place_is_symmetric():
    assert place("bottom-right", (10, 20), (100, 50), (1000, 500), 1.0) == (890, 430)
    assert place("left", (10, 0), (100, 50), (1000, 500), 2.0) == (20, 225)
