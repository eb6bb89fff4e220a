"""Draw the bundled sample logo (deterministic): configs/assets/logos/livegen.png, a rounded badge
with the name on a transparent background, for the `news` preset.

    python scripts/make_logos.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parent.parent / "configs" / "assets" / "logos"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    scale = 4  # draw large, then scale down: smooth edges
    width, height = 256 * scale, 80 * scale
    badge = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(badge)
    draw.rounded_rectangle((0, 0, width - 1, height - 1), radius=height // 2, fill=(16, 32, 58, 235))
    draw.ellipse((18 * scale, 18 * scale, 62 * scale, 62 * scale), fill=(240, 180, 41, 255))
    draw.ellipse((31 * scale, 31 * scale, 49 * scale, 49 * scale), fill=(16, 32, 58, 255))
    font_path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    font = ImageFont.truetype(str(font_path), 40 * scale)
    box = draw.textbbox((0, 0), "livegen", font=font)
    draw.text((78 * scale - box[0], (height - (box[3] - box[1])) // 2 - box[1]), "livegen", font=font,
              fill=(255, 255, 255, 255))
    badge.resize((256, 80), Image.Resampling.LANCZOS).save(OUT / "livegen.png", optimize=True)
    print(f"{OUT / 'livegen.png'}: {(OUT / 'livegen.png').stat().st_size} bytes")


if __name__ == "__main__":
    main()
