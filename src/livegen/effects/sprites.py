"""Sprites: pictures drawn once with Pillow, then alpha-blended onto frames many times.

The `overlays` effect draws each layer into an RGBA `Sprite` only when what it shows changes;
per frame only the sprites' rectangles are blended onto the picture, with NumPy on the host
(`blend_host`) or in torch on the device (`blend_device`, the sprite uploaded once per device).
`place` puts a sprite by anchor and offset; the text helpers draw with TrueType fonts, DejaVu
Sans by default (it ships with matplotlib, which the node installs anyway).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def rgba(value: str) -> tuple[int, int, int, int]:
    """'#rrggbb' or '#rrggbbaa' → (r, g, b, a)."""
    alpha = int(value[7:9], 16) if len(value) == 9 else 255
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16), alpha


@functools.lru_cache(maxsize=4)
def default_font_path(bold: bool) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")


@functools.lru_cache(maxsize=64)
def font_at(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def text_box(text: str, font: ImageFont.FreeTypeFont) -> tuple[int, int, int, int]:
    return ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)


def draw_text_sprite(text: str, font: ImageFont.FreeTypeFont, color: str, box: str | None, pad: int) -> Image.Image:
    left, top, right, bottom = text_box(text, font)
    width, height = right - left + 2 * pad, bottom - top + 2 * pad
    sprite = Image.new("RGBA", (max(1, width), max(1, height)), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    if box is not None:
        draw.rounded_rectangle((0, 0, width - 1, height - 1), radius=pad // 2, fill=rgba(box))
    else:
        shadow = max(1, font.size // 16)
        draw.text((pad - left + shadow, pad - top + shadow), text, font=font, fill=(0, 0, 0, 160))
    draw.text((pad - left, pad - top), text, font=font, fill=rgba(color))
    return sprite


class Sprite:
    """A layer's rendered picture: premultiplied RGB and alpha as uint16 arrays, ready to blend."""

    def __init__(self, image: Image.Image, opacity: float):
        pixels = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        alpha = (pixels[..., 3:4] * round(opacity * 255) + 127) // 255
        self.alpha = alpha  # (h, w, 1) 0–255
        self.color = (pixels[..., :3] * alpha + 127) // 255  # premultiplied, 0–255
        self.height, self.width = pixels.shape[:2]
        self.device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def on(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self.device.get(device)
        if cached is None or cached[0].dtype != dtype:
            color = torch.from_numpy(self.color.astype(np.float32) / 255).permute(2, 0, 1).to(device, dtype)
            alpha = torch.from_numpy(self.alpha.astype(np.float32) / 255).permute(2, 0, 1).to(device, dtype)
            cached = self.device[device] = (color, alpha)
        return cached


def place(anchor: str, offset: tuple[float, float], size: tuple[int, int], frame: tuple[int, int],
          scale: float) -> tuple[int, int]:
    """Top-left corner of a `size` sprite anchored in a `frame`, `offset` moving it inward."""
    (w, h), (fw, fh) = size, frame
    dx, dy = offset[0] * scale, offset[1] * scale
    vertical, _, horizontal = anchor.partition("-") if "-" in anchor else (anchor, "", anchor)
    if anchor in ("left", "right"):
        vertical = "middle"
    if anchor in ("top", "bottom"):
        horizontal = "middle"
    if anchor == "center":
        vertical = horizontal = "middle"
    x = {"left": dx, "right": fw - w - dx}.get(horizontal, (fw - w) / 2 + dx)
    y = {"top": dy, "bottom": fh - h - dy}.get(vertical, (fh - h) / 2 + dy)
    return round(x), round(y)


def _clip(sprite: Sprite, x: int, y: int, crop: Any, width: int, height: int):
    """The part of the sprite (after a ticker's window) inside the frame: frame and sprite slices."""
    sx0, sw = (crop[0], crop[2]) if crop else (0, sprite.width)
    fx0, fy0 = max(0, x), max(0, y)
    fx1, fy1 = min(width, x + sw), min(height, y + sprite.height)
    if fx1 <= fx0 or fy1 <= fy0:
        return None
    return (slice(fy0, fy1), slice(fx0, fx1)), (slice(fy0 - y, fy1 - y), slice(sx0 + fx0 - x, sx0 + fx1 - x))


def blend_host(out: np.ndarray, sprite: Sprite, x: int, y: int, crop: Any = None) -> None:
    """Alpha-blend `sprite` onto `out` ((H, W, 3) uint8) in place, at (x, y)."""
    spans = _clip(sprite, x, y, crop, out.shape[1], out.shape[0])
    if spans is None:
        return
    (fy, fx), (sy, sx) = spans
    alpha = sprite.alpha[sy, sx]
    region = out[fy, fx]
    region[:] = ((region * (255 - alpha) + 127) // 255 + sprite.color[sy, sx]).astype(np.uint8)


def blend_device(image: torch.Tensor, sprite: Sprite, x: int, y: int, crop: Any = None) -> None:
    """`blend_host` on a (3, H, W) float tensor in [0, 1]."""
    spans = _clip(sprite, x, y, crop, image.shape[2], image.shape[1])
    if spans is None:
        return
    (fy, fx), (sy, sx) = spans
    color, alpha = sprite.on(image.device, image.dtype)
    region = image[:, fy, fx]
    region.mul_(1.0 - alpha[:, sy, sx]).add_(color[:, sy, sx])
