"""`background`: replace what is behind the person, using the mask of `segmentation`.

Modes:
- `blur`: the room, blurred by `blur` (pixels at 720p; scaled with the frame). The person is
  masked out before blurring (a normalised convolution: blur(picture × background weight) ÷
  blur(background weight)), so the person's colours do not bleed into the blur as a halo. The
  blur runs at a reduced resolution chosen from its strength and is upsampled, which costs a
  fraction of a full-size blur and looks the same at these strengths.
- `image`: a still picture (`image`: an uploaded `upload:<id>` or a file under configs/assets/),
  scaled to cover the frame and centre-cropped.
- `color`: one colour (`color`, "#rrggbb").
- `video`: a looping video file (`video`, same references as images), decoded with PyAV on a
  thread of its own at the file's frame rate; the frame path takes the newest decoded picture.
- `transparent`: the `key_color` (default pure green) for a compositor downstream to key out;
  the mask's soft edge blends into the key colour, as a green screen would.
- `generated`: a scene from the node's generator (the diffusion stage), conditioned on `prompt`
  and the `generation` settings. Whenever no scene is available (no GPU or model, still loading,
  no picture yet) the `fallback` mode is shown and the frame is noted `background_fallback`, so
  the fallback is visible in the stream's stats and metrics.

The composite is `background + mask × (picture − background)`: on the host with OpenCV on
CPU nodes, in torch on the device when the frame lives on a GPU.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from fractions import Fraction
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from livegen.effects.base import Effect, EffectContext, EffectParams, Frame, GeneratedScene
from livegen.errors import Unprocessable

log = logging.getLogger(__name__)

Mode = Literal["blur", "image", "color", "video", "transparent", "generated"]
HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
REFERENCE_HEIGHT = 720  # `blur` is in pixels of a 720p frame
BLUR_WORK_SIGMA = 2.0  # the blur is done at the scale where its sigma is about this many pixels
VIDEO_JOIN_S = 2.0


class BackgroundParams(EffectParams):
    mode: Mode = "blur"
    blur: float = Field(18.0, ge=1.0, le=120.0)
    """Blur strength: Gaussian sigma in pixels of a 720p frame."""
    image: str | None = Field(None, min_length=1, max_length=300)
    video: str | None = Field(None, min_length=1, max_length=300)
    color: str = "#1e3a5f"
    key_color: str = "#00ff00"
    prompt: str | None = Field(None, max_length=1000)
    generation: dict[str, Any] = Field(default_factory=dict)
    """Settings for the generator (seed, strength, steps …; see the diffusion stage)."""
    fallback: Literal["blur", "image", "color", "video", "transparent"] = "blur"
    """What `generated` shows whenever no generated scene is available."""

    @field_validator("color", "key_color")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not HEX_COLOR.fullmatch(value):
            raise ValueError("a colour is written #rrggbb")
        return value.lower()

    @model_validator(mode="after")
    def _needs(self) -> BackgroundParams:
        shown = {self.mode, self.fallback} if self.mode == "generated" else {self.mode}
        if "image" in shown and not self.image:
            raise ValueError("mode image needs `image` (an upload:<id> or a file under configs/assets/)")
        if "video" in shown and not self.video:
            raise ValueError("mode video needs `video` (an upload:<id> or a file under configs/assets/)")
        if self.mode == "generated" and not (self.prompt and self.prompt.strip()):
            raise ValueError("mode generated needs a `prompt`")
        return self


def hex_rgb(value: str) -> tuple[int, int, int]:
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def cover_fit(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """`picture` scaled to cover width × height and centre-cropped to it."""
    ph, pw = picture.shape[:2]
    scale = max(width / pw, height / ph)
    sw, sh = max(width, round(pw * scale)), max(height, round(ph * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(picture, (sw, sh), interpolation=interpolation)
    x0, y0 = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(scaled[y0 : y0 + height, x0 : x0 + width])


def blur_plan(strength: float, height: int) -> tuple[int, float]:
    """(halvings, sigma at that scale) for a blur of `strength` (720p pixels): the picture is
    halved (an anti-aliased pyramid step) while the blur left to do stays ≥ BLUR_WORK_SIGMA."""
    sigma = strength * height / REFERENCE_HEIGHT
    levels = max(0, int(np.floor(np.log2(max(sigma / BLUR_WORK_SIGMA, 1.0)))))
    if height >= 360:  # a full-size float blur costs tens of ms; half size is never visible
        levels = max(levels, 1)
    while levels and height >> levels < 8:  # keep the small picture usable
        levels -= 1
    return levels, sigma / (1 << levels)


def _pyramid(picture: np.ndarray, levels: int) -> np.ndarray:
    for _ in range(levels):
        picture = cv2.pyrDown(picture)
    return picture


def background_weight(mask: np.ndarray) -> np.ndarray:
    """How much each pixel counts as background when blurring: the mask's soft edge still holds
    some of the person, so it is weighed down steeply."""
    weight = 1.0 - mask
    weight *= weight
    return weight * weight


def masked_blur(picture: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
    """The background of `picture` blurred without the person (`mask`: (H, W) float32, 1 =
    person): a normalised convolution at reduced resolution; (H, W, 3) uint8."""
    height, width = picture.shape[:2]
    levels, sigma = blur_plan(strength, height)
    small = _pyramid(picture, levels).astype(np.float32)
    weight = background_weight(_pyramid(mask, levels))
    num = cv2.GaussianBlur(small * weight[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(weight, (0, 0), sigma)
    # deep inside the person no background is near and this comes out dark: the person covers it
    blurred = num / np.maximum(den, 1e-3)[..., None]
    return cv2.resize(np.clip(blurred, 0, 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_LINEAR)


def composite(person: np.ndarray, backdrop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`mask` × person + (1 − mask) × backdrop, uint8 in and out (mask: (H, W) float32)."""
    return cv2.blendLinear(person, backdrop, mask, 1.0 - mask)


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, int(3.0 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (kernel / kernel.sum()).to(dtype)


def masked_blur_tensor(image: torch.Tensor, mask: torch.Tensor, strength: float) -> torch.Tensor:
    """`masked_blur` on the device: image (3, H, W) in [0, 1], mask (1, H, W) → (3, H, W)."""
    _, height, width = image.shape
    levels, sigma = blur_plan(strength, height)
    small = torch.cat([image, mask])[None]
    if levels:
        small = F.interpolate(small, size=(height >> levels, width >> levels), mode="area")
    weight = (1.0 - small[:, 3:4]) ** 4
    small = torch.cat([small[:, :3] * weight, weight], dim=1)  # (1, 4, h, w)
    kernel = _gaussian_kernel(sigma, image.device, image.dtype)
    pad = kernel.numel() // 2
    channels = small.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    small = F.conv2d(F.pad(small, (pad, pad, 0, 0), mode="reflect"), horizontal, groups=channels)
    small = F.conv2d(F.pad(small, (0, 0, pad, pad), mode="reflect"), vertical, groups=channels)
    blurred = small[:, :3] / small[:, 3:4].clamp_min(1e-3)
    if levels:
        blurred = F.interpolate(blurred, size=(height, width), mode="bilinear", align_corners=False)
    return blurred[0].clamp_(0.0, 1.0)


class VideoLoop:
    """A video file decoded in a loop on a thread of its own, at the file's frame rate; `latest`
    is the newest picture, cover-fitted to the size last asked for (latest wins, nothing queues)."""

    def __init__(self, path, name: str = "background video"):
        import av

        self._av = av
        self.path = path
        with av.open(str(path)) as container:  # fail now, at create time, if it does not decode
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            self.interval = 1.0 / float(rate)
            first = next(container.decode(stream)).to_ndarray(format="rgb24")
        self._size: tuple[int, int] | None = None
        self._source = first
        self._latest: np.ndarray | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.frames_decoded = 0
        self._thread = threading.Thread(target=self._run, name=f"livegen-video-{name}", daemon=True)
        self._thread.start()

    def latest(self, width: int, height: int) -> np.ndarray:
        with self._lock:
            self._size = (width, height)
            picture, source = self._latest, self._source
        if picture is None or picture.shape[:2] != (height, width):
            picture = cover_fit(source, width, height)  # first frame, or the size changed
        return picture

    def _publish(self, rgb: np.ndarray) -> None:
        with self._lock:
            size = self._size
        fitted = cover_fit(rgb, *size) if size else None
        with self._lock:
            self._source, self._latest = rgb, fitted
        self.frames_decoded += 1

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            try:
                with self._av.open(str(self.path)) as container:
                    for frame in container.decode(video=0):
                        if self._stop.is_set():
                            return
                        self._publish(frame.to_ndarray(format="rgb24"))
                        next_at += self.interval
                        delay = next_at - time.perf_counter()
                        if delay > 0:
                            self._stop.wait(delay)
                        else:
                            next_at = time.perf_counter()  # fell behind: do not race to catch up
            except Exception:
                log.exception("background video %s stopped decoding", self.path.name)
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(VIDEO_JOIN_S)


class BackgroundEffect(Effect):
    name = "background"
    Params = BackgroundParams
    params: BackgroundParams
    needs_mask = True

    def __init__(self, params: BackgroundParams, context: EffectContext | None = None):
        super().__init__(params, context)
        self._image: np.ndarray | None = None
        self._fitted: dict[tuple[Any, ...], np.ndarray] = {}
        self._video: VideoLoop | None = None
        self._scene: GeneratedScene | None = None
        self._unavailable_logged = False
        shown = {params.mode, params.fallback} if params.mode == "generated" else {params.mode}
        if "image" in shown:
            self._image = self._load_image(params.image)  # type: ignore[arg-type]
        if "video" in shown:
            self._video = VideoLoop(self._resolve("video", params.video))  # type: ignore[arg-type]
        if params.mode == "generated":
            self._open_scene(params)

    # ---- set-up ----------------------------------------------------------------------------
    def _resolve(self, field: str, ref: str):
        if self.context.assets is None:
            raise Unprocessable(f"invalid parameters: background.{field}: no asset store to find {ref!r} in",
                                errors=[{"field": field, "message": "no asset store"}])
        try:
            return self.context.assets.resolve(ref)
        except Unprocessable as exc:
            raise Unprocessable(f"invalid parameters: background.{field}: {exc.detail}",
                                errors=[{"field": field, "message": exc.detail}]) from None

    def _load_image(self, ref: str) -> np.ndarray:
        from PIL import Image

        path = self._resolve("image", ref)
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except Exception as exc:
            raise Unprocessable(f"invalid parameters: background.image: {ref!r} is not a readable image ({exc})",
                                errors=[{"field": "image", "message": "not a readable image"}]) from None

    def _open_scene(self, params: BackgroundParams) -> None:
        generator = self.context.generator
        if generator is None:
            from livegen.diffusion.params import SceneParams, validate

            validate(SceneParams, params.generation, "generated")  # bad settings are 422 anyway
            return
        self._scene = generator.scene(params.prompt or "", params.generation)

    # ---- live changes ----------------------------------------------------------------------
    def retunable(self, params: BackgroundParams) -> bool:  # type: ignore[override]
        old = self.params
        same_sources = (params.mode, params.fallback, params.image, params.video) == (
            old.mode, old.fallback, old.image, old.video)
        if not same_sources:
            return False
        if params.mode == "generated" and (params.prompt, params.generation) != (old.prompt, old.generation):
            return self._scene is None or hasattr(self._scene, "update")
        return True

    def retune(self, params: BackgroundParams) -> None:  # type: ignore[override]
        old, self.params = self.params, params
        if self._scene is not None and (params.prompt, params.generation) != (old.prompt, old.generation):
            self._scene.update(params.prompt, params.generation)  # type: ignore[attr-defined]

    # ---- per frame -------------------------------------------------------------------------
    def prepare(self, frame: Frame) -> None:
        if self._scene is not None and hasattr(self._scene, "prepare"):
            self._scene.prepare(frame)  # lets several streams share the generator's device calls

    def apply(self, frame: Frame) -> None:
        p = self.params
        mode = p.mode
        generated: np.ndarray | torch.Tensor | None = None
        if mode == "generated":
            generated = self._generated(frame)
            if generated is None:
                frame.notes.add("background_fallback")
                mode = p.fallback
        if frame.mask is None or frame.mask_rgb is None:
            raise RuntimeError("background needs a mask: run segmentation before it")
        if frame.on_host or frame.device.type == "cpu" and not isinstance(generated, torch.Tensor):
            self._apply_host(frame, mode, generated)
        else:
            self._apply_device(frame, mode, generated)

    def _generated(self, frame: Frame) -> np.ndarray | torch.Tensor | None:
        generator = self.context.generator
        reason = generator.unavailable() if generator is not None else "the node has no scene generator"
        if reason is not None or self._scene is None:
            if not self._unavailable_logged:
                log.warning("generated background falls back to %s: %s", self.params.fallback, reason)
                self._unavailable_logged = True
            return None
        picture = self._scene.background(frame)
        frame.notes.update(getattr(self._scene, "notes", ()) or ())
        return picture

    def _static(self, mode: str, width: int, height: int) -> np.ndarray:
        """The image, colour or key colour at the frame's size (made once per size)."""
        key = (mode, width, height, self.params.color, self.params.key_color)
        cached = self._fitted.get(key)
        if cached is None:
            if mode == "image":
                cached = cover_fit(self._image, width, height)  # type: ignore[arg-type]
            else:
                color = hex_rgb(self.params.color if mode == "color" else self.params.key_color)
                cached = np.empty((height, width, 3), np.uint8)
                cached[:] = color
            if len(self._fitted) > 8:
                self._fitted.clear()
            self._fitted[key] = cached
        return cached

    def _backdrop_host(self, frame: Frame, mode: str, generated: Any) -> np.ndarray:
        width, height = frame.size
        if generated is not None:
            return generated if isinstance(generated, np.ndarray) else _to_host(generated)
        if mode == "blur":
            return masked_blur(frame.rgb, frame.mask_rgb, self.params.blur)  # type: ignore[arg-type]
        if mode == "video":
            return self._video.latest(width, height)  # type: ignore[union-attr]
        return self._static(mode, width, height)

    def _apply_host(self, frame: Frame, mode: str, generated: Any) -> None:
        backdrop = self._backdrop_host(frame, mode, generated)
        frame.rgb = composite(frame.rgb, backdrop, frame.mask_rgb)  # type: ignore[arg-type]

    def _apply_device(self, frame: Frame, mode: str, generated: Any) -> None:
        image, mask = frame.image, frame.mask.to(frame.image.dtype)  # type: ignore[union-attr]
        if isinstance(generated, torch.Tensor):
            backdrop = generated.to(image.device, image.dtype)
        elif generated is not None:
            backdrop = _to_device(generated, image)
        elif mode == "blur":
            backdrop = masked_blur_tensor(image, mask, self.params.blur)
        else:
            backdrop = _to_device(self._backdrop_host(frame, mode, None), image)
        frame.image = torch.lerp(backdrop, image, mask)

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._video = None
        if self._scene is not None:
            self._scene.close()
            self._scene = None


def _to_host(picture: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(picture.float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())


def _to_device(picture: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    pixels = torch.from_numpy(picture)
    if like.device.type == "cuda":
        pixels = pixels.pin_memory().to(like.device, non_blocking=True)
    return pixels.permute(2, 0, 1).to(like.dtype).div_(255.0)
