"""Draw the bundled background assets: deterministic, numpy and Pillow only (PyAV to encode the
video), no downloads, no photos.

    python scripts/make_backgrounds.py

configs/assets/backgrounds/office.jpg (1920×1080): an office corner as a webcam sees it behind a
person — a daylit window, shelves with books, a plant, a lamp and a desk edge, slightly out of
focus — for the `office` preset and `image` mode.
configs/assets/backgrounds/loop.mp4 (640×360, 3 s at 24 fps, H.264): soft bokeh lights drifting
over a slowly shifting dusk gradient; every motion completes whole cycles, so the loop has no seam.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "configs" / "assets" / "backgrounds"
W, H = 1920, 1080
WINDOW = (150, 130, 830, 720)  # x0, y0, x1, y1
DESK_Y = 880


def _soft_shadow(picture: Image.Image, box: tuple[int, int, int, int], strength: int, blur: float) -> Image.Image:
    """Darken `box` of `picture` by a blurred shadow (what a shelf or a pot casts on the wall)."""
    shadow = Image.new("L", picture.size, 0)
    ImageDraw.Draw(shadow).rectangle(box, fill=strength)
    shadow = shadow.filter(ImageFilter.GaussianBlur(blur))
    return Image.composite(Image.new("RGB", picture.size, (40, 34, 28)), picture, shadow)


def _wall() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    y, x = y / H, x / W
    wall = (1 - y)[..., None] * np.array([234, 228, 216]) + y[..., None] * np.array([206, 197, 182])
    # daylight from the window: brighter near it, falling off across the room
    cx, cy = (WINDOW[0] + WINDOW[2]) / 2 / W, (WINDOW[1] + WINDOW[3]) / 2 / H
    glow = np.exp(-(((x - cx) * 1.6) ** 2 + (y - cy) ** 2) / 0.18)
    wall = wall * (0.86 + 0.2 * glow[..., None])
    return np.clip(wall, 0, 255)


def office() -> Image.Image:
    picture = Image.fromarray(_wall().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    rng = np.random.default_rng(3)

    # window: sky gradient, a far skyline, frame and mullions
    x0, y0, x1, y1 = WINDOW
    sky = np.linspace(0, 1, y1 - y0)[:, None, None] * np.array([-38, -20, 6]) + np.array([188, 216, 240])
    picture.paste(Image.fromarray(np.broadcast_to(sky, (y1 - y0, x1 - x0, 3)).astype(np.uint8)), (x0, y0))
    bx = x0
    while bx < x1:
        bw, bh = int(rng.integers(50, 120)), int(rng.integers(90, 260))
        tone = int(rng.integers(150, 185))
        draw.rectangle((bx, y1 - bh, min(bx + bw, x1), y1), fill=(tone, tone + 8, tone + 20))
        bx += bw + int(rng.integers(0, 30))
    draw.rectangle((x0, y1 - 40, x1, y1), fill=(128, 150, 120))  # tree tops
    for bar in ((x0 + x1) // 2,):
        draw.rectangle((bar - 9, y0, bar + 9, y1), fill=(236, 234, 228))
    draw.rectangle((x0, (y0 + y1) // 2 - 8, x1, (y0 + y1) // 2 + 8), fill=(236, 234, 228))
    draw.rectangle((x0 - 18, y0 - 18, x1 + 18, y1 + 18), outline=(244, 242, 236), width=20)
    draw.rectangle((x0 - 40, y1 + 18, x1 + 40, y1 + 36), fill=(238, 236, 230))  # sill

    # shelves with books, a globe and a framed print, each shelf casting a soft shadow
    for shelf_y in (330, 590):
        picture = _soft_shadow(picture, (1160, shelf_y + 14, 1780, shelf_y + 40), 90, 14)
    draw = ImageDraw.Draw(picture)
    for shelf_y in (330, 590):
        draw.rectangle((1160, shelf_y, 1780, shelf_y + 20), fill=(146, 106, 74))
        draw.rectangle((1160, shelf_y + 16, 1780, shelf_y + 20), fill=(112, 80, 56))
    bx = 1180
    palette = [(58, 76, 110), (140, 52, 48), (204, 170, 92), (70, 110, 86), (226, 222, 210), (92, 70, 110)]
    while bx < 1560:
        bw, bh = int(rng.integers(20, 40)), int(rng.integers(110, 170))
        colour = tuple(int(c) for c in np.clip(np.array(palette[int(rng.integers(len(palette)))])
                                                + rng.integers(-18, 18, 3), 0, 255))
        draw.rectangle((bx, 330 - bh, bx + bw, 330), fill=colour)
        draw.rectangle((bx + 3, 330 - bh + 14, bx + bw - 3, 330 - bh + 20), fill=(236, 216, 160))  # a spine band
        bx += bw + int(rng.integers(1, 5))
    draw.polygon([(1600, 330), (1628, 330), (1700, 200), (1672, 192)], fill=(160, 70, 60))  # a leaning book
    draw.ellipse((1250, 460, 1380, 590), fill=(84, 120, 164))  # a globe
    draw.arc((1240, 450, 1390, 600), 200, 340, fill=(160, 130, 70), width=8)
    draw.rectangle((1480, 430, 1720, 590), fill=(246, 244, 238))  # a framed print
    draw.rectangle((1500, 450, 1700, 570), fill=(188, 204, 196))
    draw.polygon([(1500, 570), (1570, 490), (1620, 540), (1660, 500), (1700, 570)], fill=(110, 140, 120))

    # a floor lamp at the left edge, lit
    lamp = Image.new("L", picture.size, 0)
    ImageDraw.Draw(lamp).ellipse((-60, 180, 260, 520), fill=120)
    picture = Image.composite(Image.new("RGB", picture.size, (255, 236, 190)), picture,
                              lamp.filter(ImageFilter.GaussianBlur(70)))
    draw = ImageDraw.Draw(picture)
    draw.polygon([(20, 250), (140, 250), (170, 360), (-10, 360)], fill=(240, 226, 196))
    draw.rectangle((76, 360, 84, DESK_Y), fill=(60, 56, 52))

    # a plant in a pot on the desk, its shadow on the wall behind
    picture = _soft_shadow(picture, (1000, 560, 1200, DESK_Y), 70, 30)
    draw = ImageDraw.Draw(picture)
    for _ in range(26):
        angle = rng.uniform(-1.35, 1.35)
        length = rng.uniform(150, 300)
        tip = (1040 + length * math.sin(angle), 740 - length * math.cos(angle))
        draw.line((1040, 740, *tip), fill=(58, 98, 54), width=6)
        leaf = Image.new("RGBA", (120, 60), (0, 0, 0, 0))
        shade = int(rng.integers(0, 40))
        ImageDraw.Draw(leaf).ellipse((0, 0, 119, 59), fill=(52 + shade, 120 + shade, 62 + shade // 2, 255))
        leaf = leaf.rotate(-math.degrees(angle) + 90, expand=True)
        picture.paste(leaf, (int(tip[0] - leaf.width / 2), int(tip[1] - leaf.height / 2)), leaf)
    draw = ImageDraw.Draw(picture)
    draw.polygon([(975, 730), (1105, 730), (1090, DESK_Y), (990, DESK_Y)], fill=(206, 112, 74))
    draw.rectangle((968, 722, 1112, 740), fill=(190, 100, 66))

    # the desk edge across the bottom, lighter where the window light falls
    desk = np.linspace(1, 0, W)[None, :, None] * 22 + np.array([168, 128, 92])
    desk = np.broadcast_to(desk, (H - DESK_Y, W, 3)) - np.linspace(0, 30, H - DESK_Y)[:, None, None]
    picture.paste(Image.fromarray(np.clip(desk, 0, 255).astype(np.uint8)), (0, DESK_Y))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, DESK_Y, W, DESK_Y + 10), fill=(196, 158, 118))
    draw.rectangle((1420, DESK_Y - 60, 1700, DESK_Y), fill=(44, 46, 52))  # a closed laptop, a mug
    draw.rectangle((1420, DESK_Y - 60, 1700, DESK_Y - 52), fill=(84, 88, 96))
    draw.rectangle((1760, DESK_Y - 90, 1830, DESK_Y), fill=(236, 232, 222))
    draw.arc((1810, DESK_Y - 75, 1860, DESK_Y - 25), 270, 90, fill=(236, 232, 222), width=10)

    # a camera focused on the person sees the room a little soft; faint grain keeps the
    # gradients from banding once the stream is encoded
    picture = picture.filter(ImageFilter.GaussianBlur(4))
    grain = np.random.default_rng(11).normal(0, 1.2, (H, W, 1))
    return Image.fromarray(np.clip(np.asarray(picture) + grain, 0, 255).astype(np.uint8))


def loop(path: Path, width: int = 640, height: int = 360, fps: int = 24, seconds: int = 3) -> None:
    frames = fps * seconds
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(5)
    lights = [
        {
            "x": rng.uniform(0.05, 0.95), "y": rng.uniform(0.1, 0.9),
            "radius": rng.uniform(16, 46), "alpha": rng.uniform(0.18, 0.42),
            "colour": np.array([(255, 196, 120), (255, 150, 170), (150, 190, 255), (255, 230, 180)][i % 4], np.float32),
            "cycles": int(rng.integers(1, 3)), "phase": rng.uniform(0, 2 * np.pi),
            "drift": rng.uniform(0.02, 0.06),
        }
        for i in range(16)
    ]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "26", "preset": "veryslow", "g": str(fps)}
        for index in range(frames):
            t = 2 * np.pi * index / frames  # whole cycles over the clip: the loop has no seam
            mix = (0.5 + 0.5 * np.sin(t + x / width * 2.5 - y / height))[..., None]
            picture = mix * np.array([34, 26, 58], np.float32) + (1 - mix) * np.array([18, 30, 52], np.float32)
            picture = picture * (1.15 - 0.5 * (y / height)[..., None])  # darker towards the floor
            for light in lights:
                cx = width * (light["x"] + light["drift"] * np.sin(light["cycles"] * t + light["phase"]))
                cy = height * (light["y"] + 0.5 * light["drift"] * np.cos(t + light["phase"]))
                distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
                # a lens's out-of-focus highlight: a flat disc with a soft rim, added like light
                disc = np.clip((light["radius"] - distance) / 3.0 + 0.5, 0, 1)
                pulse = 0.8 + 0.2 * np.sin(light["cycles"] * t + 2 * light["phase"])
                picture += (disc * light["alpha"] * pulse)[..., None] * light["colour"]
            frame = av.VideoFrame.from_ndarray(np.clip(picture, 0, 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    office().save(OUT / "office.jpg", quality=85, optimize=True)
    loop(OUT / "loop.mp4")
    for name in ("office.jpg", "loop.mp4"):
        print(f"{name}: {(OUT / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
