"""`overlays`: broadcast graphics over the picture — text, logos, lower thirds, clocks,
countdowns and scrolling tickers.

Each layer has an `anchor` (a corner, an edge's middle, or the centre), an `offset` inward from
it, a size, an `opacity`, a `z` (higher on top; equal z keeps list order) and `visible`. Sizes and
offsets are pixels of a 720p frame and scale with the frame's height, so a preset looks the same
at 480p and 1080p.

A layer is drawn with Pillow into an RGBA sprite (see `sprites`) only when what it shows
changes: a clock once a second (when its text changes), a countdown likewise, a ticker once (it
scrolls by moving a window over its strip), everything else once per frame size. Per frame only
the sprites' rectangles are alpha-blended onto the picture: with NumPy on CPU nodes, in torch on
the device (sprites uploaded once per change) when the frame lives on a GPU.

Text is any UTF-8 in a TrueType font: DejaVu Sans by default (it covers Latin, Greek, Cyrillic
and more and ships with matplotlib, which the node installs anyway); `font` names another .ttf
or .otf under configs/assets/ (e.g. a CJK font). Characters a font lacks are drawn as its
missing-glyph box, never an error.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field, field_validator, model_validator

from livegen.effects.base import Effect, EffectContext, EffectParams, Frame
from livegen.effects.sprites import (
    Sprite,
    blend_device,
    blend_host,
    default_font_path,
    draw_text_sprite,
    font_at,
    place,
    rgba,
    text_box,
)
from livegen.errors import Unprocessable

REFERENCE_HEIGHT = 720
Anchor = Literal["top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"]
COLOR = r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$"
Color = Annotated[str, Field(pattern=COLOR)]


class Layer(EffectParams):
    anchor: Anchor = "top-left"
    offset: tuple[float, float] = (32.0, 32.0)
    """x, y in 720p pixels, inward from the anchor."""
    opacity: float = Field(1.0, ge=0.0, le=1.0)
    z: int = 0
    visible: bool = True


class TextLayer(Layer):
    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=500)
    size: float = Field(36.0, gt=4, le=400)
    color: Color = "#ffffff"
    box: Color | None = "#00000099"
    """Colour of a box behind the text for legibility (None: none; the text gets a shadow)."""
    font: str | None = None
    bold: bool = False


class ImageLayer(Layer):
    type: Literal["image"] = "image"
    image: str = Field(min_length=1, max_length=300)
    width: float | None = Field(160.0, gt=1, le=4000)
    """Width in 720p pixels (height follows the picture's aspect); None: use `height`."""
    height: float | None = Field(None, gt=1, le=4000)


class LowerThirdLayer(Layer):
    type: Literal["lower_third"] = "lower_third"
    anchor: Anchor = "bottom-left"
    offset: tuple[float, float] = (48.0, 56.0)
    title: str = Field(min_length=1, max_length=200)
    subtitle: str = Field("", max_length=300)
    width: float = Field(560.0, gt=40, le=4000)
    title_size: float = Field(34.0, gt=4, le=200)
    subtitle_size: float = Field(22.0, gt=4, le=200)
    bar_color: Color = "#10203ae6"
    accent_color: Color = "#f0b429"
    title_color: Color = "#ffffff"
    subtitle_color: Color = "#c9d3e3"
    font: str | None = None


class ClockLayer(Layer):
    type: Literal["clock"] = "clock"
    anchor: Anchor = "top-right"
    format: str = Field("%H:%M:%S", min_length=1, max_length=100)
    """strftime format."""
    timezone: str | None = None
    """IANA name (e.g. Europe/Berlin); None: the node's local time."""
    size: float = Field(30.0, gt=4, le=400)
    color: Color = "#ffffff"
    box: Color | None = "#00000099"
    font: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value


class CountdownLayer(Layer):
    type: Literal["countdown"] = "countdown"
    anchor: Anchor = "top"
    target: datetime | None = None
    """When it reaches zero (ISO 8601; without a zone: UTC)."""
    seconds: float | None = Field(None, gt=0, le=366 * 86400)
    """Or: how long from when the effect starts."""
    format: str = Field("%H:%M:%S", min_length=1, max_length=100)
    """%D days, %H hours, %M minutes, %S seconds of what remains (%H is total hours without %D)."""
    done_text: str = Field("LIVE", max_length=200)
    size: float = Field(40.0, gt=4, le=400)
    color: Color = "#ffffff"
    box: Color | None = "#00000099"
    font: str | None = None

    @model_validator(mode="after")
    def _one_end(self) -> CountdownLayer:
        if (self.target is None) == (self.seconds is None):
            raise ValueError("a countdown needs exactly one of `target` or `seconds`")
        return self


class TickerLayer(Layer):
    type: Literal["ticker"] = "ticker"
    anchor: Anchor = "bottom"
    offset: tuple[float, float] = (0.0, 0.0)
    text: str = Field(min_length=1, max_length=2000)
    speed: float = Field(120.0, ge=0, le=2000)
    """Pixels (720p) per second, right to left."""
    size: float = Field(26.0, gt=4, le=200)
    width: float | None = Field(None, gt=40, le=8000)
    """None: the frame's full width."""
    color: Color = "#ffffff"
    bar_color: Color = "#b3121fdd"
    separator: str = Field("   •   ", max_length=20)
    font: str | None = None


AnyLayer = Annotated[
    TextLayer | ImageLayer | LowerThirdLayer | ClockLayer | CountdownLayer | TickerLayer, Field(discriminator="type")
]


class OverlaysParams(EffectParams):
    layers: list[AnyLayer] = Field(default_factory=list, max_length=32)


def countdown_text(remaining_s: float, fmt: str, done: str) -> str:
    if remaining_s <= 0:
        return done
    total = int(np.ceil(remaining_s))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if "%D" not in fmt:
        hours += 24 * days
    return (fmt.replace("%D", str(days)).replace("%H", f"{hours:02d}").replace("%M", f"{minutes:02d}")
            .replace("%S", f"{seconds:02d}"))


# ---- the effect ---------------------------------------------------------------------------------
class OverlaysEffect(Effect):
    name = "overlays"
    Params = OverlaysParams
    params: OverlaysParams

    def __init__(self, params: OverlaysParams, context: EffectContext | None = None):
        super().__init__(params, context)
        self.clock = time.time
        """Seconds since the epoch; tests put a fake clock here."""
        self.renders = 0
        """How many sprites were drawn (to see that unchanged content is not redrawn)."""
        self._started = time.time()
        self._logos: dict[int, Image.Image] = {}
        self._fonts: dict[int, str] = {}
        self._sprites: dict[int, tuple[Any, Sprite]] = {}
        self._check(params)

    def _check(self, params: OverlaysParams) -> None:
        """Resolve every file a layer names (logos, fonts) now, naming the layer when one fails."""
        logos, fonts = {}, {}
        for index, layer in enumerate(params.layers):
            if isinstance(layer, ImageLayer):
                path = self._resolve(index, "image", layer.image)
                try:
                    with Image.open(path) as image:
                        logos[index] = image.convert("RGBA")
                except Exception:
                    raise _field_error(index, "image", f"{layer.image!r} is not a readable image") from None
            font = getattr(layer, "font", None)
            if font is not None:
                path = self._resolve(index, "font", font)
                try:
                    ImageFont.truetype(str(path), 12)
                except OSError:
                    raise _field_error(index, "font", f"{font!r} is not a TrueType/OpenType font") from None
                fonts[index] = str(path)
        self._logos, self._fonts = logos, fonts

    def _resolve(self, index: int, field: str, ref: str) -> Path:
        if self.context.assets is None:
            raise _field_error(index, field, f"no asset store to find {ref!r} in")
        try:
            return self.context.assets.resolve(ref)
        except Unprocessable as exc:
            raise _field_error(index, field, exc.detail) from None

    def retunable(self, params: OverlaysParams) -> bool:  # type: ignore[override]
        try:
            OverlaysEffect(params, self.context)  # files named by the new layers must resolve
        except Unprocessable:
            return False
        return True

    def retune(self, params: OverlaysParams) -> None:  # type: ignore[override]
        self._check(params)
        self.params = params
        self._sprites.clear()

    # ---- per frame --------------------------------------------------------------------------
    def apply(self, frame: Frame) -> None:
        width, height = frame.size
        scale = height / REFERENCE_HEIGHT
        now = self.clock()
        placed = []
        order = sorted(range(len(self.params.layers)), key=lambda i: self.params.layers[i].z)
        for index in order:
            layer = self.params.layers[index]
            if not layer.visible or layer.opacity == 0:
                continue
            sprite, crop = self._sprite(index, layer, scale, width, now)
            x, y = place(layer.anchor, layer.offset, (crop[2] if crop else sprite.width, sprite.height),
                         (width, height), scale)
            placed.append((sprite, x, y, crop))
        if not placed:
            return
        if frame.on_host:  # blend where the picture is: no conversion for a few rectangles
            out = frame.rgb.copy()
            for sprite, x, y, crop in placed:
                blend_host(out, sprite, x, y, crop)
            frame.rgb = out
        else:
            image = frame.image.clone()
            for sprite, x, y, crop in placed:
                blend_device(image, sprite, x, y, crop)
            frame.image = image

    def _sprite(self, index: int, layer: Any, scale: float, width: int, now: float) -> tuple[Sprite, Any]:
        """The layer's sprite (drawn again only when what it shows changed) and, for a ticker,
        the (start, 0, width) window of its strip to show now."""
        content: Any = (scale, width)
        if isinstance(layer, ClockLayer):
            zone = ZoneInfo(layer.timezone) if layer.timezone else None
            content = (scale, datetime.fromtimestamp(now, zone).strftime(layer.format))
        elif isinstance(layer, CountdownLayer):
            end = layer.target.timestamp() if layer.target else self._started + (layer.seconds or 0)  # type: ignore[union-attr]
            content = (scale, countdown_text(end - now, layer.format, layer.done_text))
        cached = self._sprites.get(index)
        if cached is None or cached[0] != content:
            cached = (content, Sprite(self._draw(index, layer, scale, width, content), layer.opacity))
            self._sprites[index] = cached
            self.renders += 1
        sprite = cached[1]
        if isinstance(layer, TickerLayer):
            shown = min(sprite.width // 2, round(layer.width * scale) if layer.width else width)
            period = sprite.width // 2  # the strip holds the text twice: any window fits
            start = int((now - self._started) * layer.speed * scale) % max(1, period)
            return sprite, (start, 0, shown)
        return sprite, None

    def _font_for(self, index: int, size: float, scale: float, bold: bool = False) -> ImageFont.FreeTypeFont:
        path = self._fonts.get(index) or str(default_font_path(bold))
        return font_at(path, max(4, round(size * scale)))

    def _draw(self, index: int, layer: Any, scale: float, width: int, content: Any) -> Image.Image:
        if isinstance(layer, TextLayer):
            font = self._font_for(index, layer.size, scale, layer.bold)
            return draw_text_sprite(layer.text, font, layer.color, layer.box, round(layer.size * scale * 0.35))
        if isinstance(layer, (ClockLayer, CountdownLayer)):
            font = self._font_for(index, layer.size, scale, True)
            return draw_text_sprite(content[1], font, layer.color, layer.box, round(layer.size * scale * 0.3))
        if isinstance(layer, ImageLayer):
            logo = self._logos[index]
            if layer.width is not None:
                size = (round(layer.width * scale), round(layer.width * scale * logo.height / logo.width))
            else:
                size = (round(layer.height * scale * logo.width / logo.height), round(layer.height * scale))  # type: ignore[operator]
            return logo.resize((max(1, size[0]), max(1, size[1])), Image.Resampling.LANCZOS)
        if isinstance(layer, LowerThirdLayer):
            return self._lower_third(index, layer, scale)
        if isinstance(layer, TickerLayer):
            return self._ticker(index, layer, scale, width)
        raise TypeError(f"unknown layer {type(layer).__name__}")

    def _lower_third(self, index: int, layer: LowerThirdLayer, scale: float) -> Image.Image:
        title_font = self._font_for(index, layer.title_size, scale, True)
        sub_font = self._font_for(index, layer.subtitle_size, scale)
        pad, accent = round(18 * scale), max(2, round(8 * scale))
        tb = text_box(layer.title, title_font)
        sb = text_box(layer.subtitle, sub_font) if layer.subtitle else (0, 0, 0, 0)
        gap = round(6 * scale) if layer.subtitle else 0
        height = pad * 2 + (tb[3] - tb[1]) + gap + (sb[3] - sb[1])
        width = max(round(layer.width * scale), accent + 2 * pad + max(tb[2] - tb[0], sb[2] - sb[0]))
        sprite = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        draw = ImageDraw.Draw(sprite)
        draw.rectangle((0, 0, width - 1, height - 1), fill=rgba(layer.bar_color))
        draw.rectangle((0, 0, accent - 1, height - 1), fill=rgba(layer.accent_color))
        x = accent + pad
        draw.text((x - tb[0], pad - tb[1]), layer.title, font=title_font, fill=rgba(layer.title_color))
        if layer.subtitle:
            y = pad + (tb[3] - tb[1]) + gap
            draw.text((x - sb[0], y - sb[1]), layer.subtitle, font=sub_font, fill=rgba(layer.subtitle_color))
        return sprite

    def _ticker(self, index: int, layer: TickerLayer, scale: float, width: int) -> Image.Image:
        font = self._font_for(index, layer.size, scale)
        unit = layer.text + layer.separator
        box = text_box(unit, font)
        shown = round(layer.width * scale) if layer.width else width
        repeats = max(1, int(np.ceil(shown / max(1, box[2] - box[0]))))
        text = unit * repeats  # one period at least as wide as what is shown
        left, top, right, bottom = text_box(text, font)
        pad = round(layer.size * scale * 0.3)
        period, height = right - left, bottom - top + 2 * pad
        strip = Image.new("RGBA", (2 * period, height), rgba(layer.bar_color))
        draw = ImageDraw.Draw(strip)
        for start in (0, period):
            draw.text((start - left, pad - top), text, font=font, fill=rgba(layer.color))
        return strip

    def close(self) -> None:
        self._sprites.clear()


def _field_error(index: int, field: str, message: str) -> Unprocessable:
    name = f"layers.{index}.{field}"
    return Unprocessable(f"invalid parameters: overlays.{name}: {message}", errors=[{"field": name, "message": message}])
