"""Draw the bundled background assets (deterministic; no downloads, no photos).

    python scripts/make_backgrounds.py

configs/assets/backgrounds/office.jpg: a bright office corner (wall, window, shelf, desk, plant)
for the `office` preset; configs/assets/backgrounds/loop.mp4: three seconds of drifting soft
light, a looping video background.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "configs" / "assets" / "backgrounds"
W, H = 1920, 1080


def office() -> Image.Image:
    y = np.linspace(0, 1, H)[:, None, None]
    x = np.linspace(0, 1, W)[None, :, None]
    wall = (1 - y) * np.array([236, 230, 218]) + y * np.array([205, 196, 182])
    wall = wall - 25 * (x - 0.3) ** 2  # light falls off away from the window
    picture = Image.fromarray(np.clip(wall + 0 * x, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    # window with daylight and a soft glow
    draw.rectangle((180, 140, 820, 700), fill=(248, 250, 252))
    for bar in (500,):
        draw.rectangle((bar - 8, 140, bar + 8, 700), fill=(222, 222, 218))
    draw.rectangle((180, 412, 820, 428), fill=(222, 222, 218))
    draw.rectangle((165, 125, 835, 715), outline=(210, 206, 198), width=14)
    # sky and a far building through the window
    draw.rectangle((194, 154, 806, 400), fill=(196, 222, 242))
    draw.rectangle((560, 240, 760, 400), fill=(170, 186, 200))
    # shelf with books
    draw.rectangle((1180, 300, 1760, 318), fill=(150, 110, 78))
    rng = np.random.default_rng(3)
    x0 = 1195
    while x0 < 1740:
        w = int(rng.integers(18, 42))
        h = int(rng.integers(90, 150))
        colour = tuple(int(c) for c in rng.integers(60, 200, 3))
        draw.rectangle((x0, 300 - h, x0 + w, 300), fill=colour)
        x0 += w + int(rng.integers(2, 8))
    draw.rectangle((1180, 560, 1760, 578), fill=(150, 110, 78))
    draw.ellipse((1300, 440, 1420, 560), fill=(90, 120, 160))  # a globe
    draw.rectangle((1520, 470, 1700, 560), fill=(235, 235, 235))  # a framed picture
    draw.rectangle((1535, 485, 1685, 545), fill=(120, 160, 130))
    # desk
    draw.rectangle((0, 860, W, H), fill=(172, 132, 96))
    draw.rectangle((0, 850, W, 872), fill=(140, 104, 74))
    # plant
    draw.rectangle((930, 700, 1030, 860), fill=(196, 98, 60))
    for angle in np.linspace(-1.2, 1.2, 9):
        tip = (980 + 260 * np.sin(angle), 700 - 240 * np.cos(angle))
        draw.line((980, 700, *tip), fill=(62, 128, 70), width=26)
        draw.ellipse((tip[0] - 40, tip[1] - 24, tip[0] + 40, tip[1] + 24), fill=(72, 146, 82))
    # a little depth of field, as a camera would see a room behind a person
    return picture.filter(ImageFilter.GaussianBlur(3))


def loop(path: Path, width: int = 640, height: int = 360, fps: int = 24, seconds: int = 3) -> None:
    frames = fps * seconds
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(5)
    blobs = rng.uniform(0, 1, (7, 5))  # x, y, radius, hue phase, speed
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "30", "preset": "veryslow", "g": str(fps)}
        for index in range(frames):
            t = 2 * np.pi * index / frames  # one full cycle: the loop has no seam
            picture = np.zeros((height, width, 3), np.float32)
            picture[:] = (18, 22, 40)
            for bx, by, br, hue, speed in blobs:
                cx = width * (bx + 0.08 * np.sin(t * (1 + round(speed * 2)) + hue * 6))
                cy = height * (by + 0.08 * np.cos(t + hue * 6))
                radius = 50 + 110 * br
                glow = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))[..., None]
                colour = 120 + 110 * np.sin(hue * 6 + np.array([0.0, 2.1, 4.2]))
                picture += glow * colour
            frame = av.VideoFrame.from_ndarray(np.clip(picture, 0, 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    office().save(OUT / "office.jpg", quality=82, optimize=True)
    loop(OUT / "loop.mp4")
    for name in ("office.jpg", "loop.mp4"):
        print(f"{OUT / name}: {(OUT / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
