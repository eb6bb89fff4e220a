"""`background`: replace what is behind the person, using the mask of `segmentation`.

Modes:
- `blur`: the room, blurred by `blur` (a Gaussian sigma in pixels of a 720p frame, scaled with
  the frame). The person is masked out before blurring — a normalised convolution,
  blur(picture × w) ÷ blur(w) with w the background weight — so the person's colours do not
  bleed into the blur as a halo. The blur runs at a reduced resolution chosen from its strength
  and is upsampled: it costs a fraction of a full-size blur and looks the same.
- `image`: a still picture (`image`: `upload:<id>` or a file under configs/assets/), decoded
  once when the effect is built, scaled to cover the frame and centre-cropped (once per size).
- `color`: one colour (`color`: "#rrggbb" or [r, g, b]).
- `video`: a looping video file (`video`, referenced like images), decoded with PyAV on a
  thread the effect owns (`media.video_loop`), paced at the file's frame rate; a frame takes
  the newest picture.
- `transparent`: the `key_color` (default pure green) behind the person, for a compositor
  downstream (OBS, a vision mixer) to key out. The mask's soft edge blends into the key colour
  as a real green screen would, so the keyer sees the same semi-transparent fringe it expects.
- `generated`: a scene from the node's generator (the diffusion stage), conditioned on `prompt`,
  `seed`, `strength` and the other `generation` settings. Whenever no scene can be shown (no
  GPU or model, still loading, no picture yet) the `fallback` mode is shown instead and the
  frame is noted `background_fallback`, so the fallback shows in the stream's stats and metrics.

The composite is mask × picture + (1 − mask) × background: with OpenCV on the host when the
frame is on the host or the node has no GPU, in torch on the device when the frame is there.
Person pixels (mask 1) come out exactly as they went in; `frame.source` is never written to.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from livegen.effects.base import Effect, EffectContext, EffectParams, Frame, GeneratedScene, check_params
from livegen.effects.generation import SceneParams
from livegen.errors import Unprocessable
from livegen.media.convert import rgb_to_tensor, tensor_to_rgb
from livegen.media.scale import halve, shrink
from livegen.media.video_loop import VideoLoop, cover_fit

log = logging.getLogger(__name__)

Mode = Literal["blur", "image", "color", "video", "transparent", "generated"]
FallbackMode = Literal["blur", "image", "color", "video", "transparent"]
HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
REFERENCE_HEIGHT = 720  # `blur` is in pixels of a 720p frame
BLUR_WORK_SIGMA = 1.5  # halve the picture while the blur left to do stays at least this wide
BLUR_MAX_LINES = 200  # and at least until its short side is at most this
VIDEO_JOIN_S = 2.0  # a decode step is milliseconds; longer means PyAV is stuck
CACHED_BACKDROPS = 8


class BackgroundParams(EffectParams):
    mode: Mode = "blur"
    blur: float = Field(18.0, ge=1.0, le=120.0)
    """Blur strength: Gaussian sigma in pixels of a 720p frame."""
    image: str | None = Field(None, min_length=1, max_length=300)
    """Mode `image`: `upload:<id>` or a path under configs/assets/."""
    video: str | None = Field(None, min_length=1, max_length=300)
    """Mode `video`: `upload:<id>` or a path under configs/assets/."""
    color: str = "#1e3a5f"
    """Mode `color`: "#rrggbb" or [r, g, b] (0–255); kept as "#rrggbb"."""
    key_color: str = "#00ff00"
    """Mode `transparent`: the colour a downstream compositor keys out."""
    prompt: str | None = Field(None, max_length=1000)
    """Mode `generated`: what the scene shows."""
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    """Mode `generated`: the noise seed (same as generation.seed, and wins over it)."""
    strength: float | None = Field(None, gt=0.0, le=1.0)
    """Mode `generated`: how far the scene departs from the camera picture (same as
    generation.strength, and wins over it)."""
    generation: dict[str, Any] = Field(default_factory=dict)
    """Mode `generated`: the other settings of the diffusion stage (steps, size, mode …)."""
    fallback: FallbackMode = "blur"
    """Mode `generated`: what is shown whenever no generated scene is available."""

    @field_validator("color", "key_color", mode="before")
    @classmethod
    def _rgb_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) != 3 or not all(type(c) is int and 0 <= c <= 255 for c in value):
                raise ValueError("a colour is [r, g, b] with each an integer 0–255, or #rrggbb")
            return "#{:02x}{:02x}{:02x}".format(*value)
        return value

    @field_validator("color", "key_color")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not HEX_COLOR.fullmatch(value):
            raise ValueError("a colour is written #rrggbb or [r, g, b]")
        return value.lower()

    @model_validator(mode="after")
    def _needs(self) -> BackgroundParams:
        if "image" in self.shown and not self.image:
            raise ValueError("mode image needs `image` (an upload:<id> or a file under configs/assets/)")
        if "video" in self.shown and not self.video:
            raise ValueError("mode video needs `video` (an upload:<id> or a file under configs/assets/)")
        if self.mode == "generated" and not (self.prompt and self.prompt.strip()):
            raise ValueError("mode generated needs a `prompt`")
        return self

    @property
    def shown(self) -> set[str]:
        """The modes this effect may show: its mode, and for `generated` also its fallback."""
        return {self.mode, self.fallback} if self.mode == "generated" else {self.mode}

    @property
    def scene_settings(self) -> dict[str, Any]:
        """What the generator is asked for: `generation` with `seed` and `strength` laid over."""
        settings = dict(self.generation)
        if self.seed is not None:
            settings["seed"] = self.seed
        if self.strength is not None:
            settings["strength"] = self.strength
        return settings


def hex_rgb(value: str) -> tuple[int, int, int]:
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def blur_plan(strength: float, width: int, height: int) -> tuple[int, float]:
    """(halvings, sigma at that scale) for a blur of `strength` (pixels of a 720p frame, by its
    short side, so portrait frames blur alike) on a width × height frame. A Gaussian's cost
    grows with its width and the picture's size, so the picture is halved while the blur left
    to do stays ≥ BLUR_WORK_SIGMA, and until it is at most BLUR_MAX_LINES short; bilinear
    upsampling of something that smooth looks like a full-size blur."""
    short = min(width, height)
    sigma = strength * short / REFERENCE_HEIGHT
    levels = max(0, int(np.floor(np.log2(max(sigma / BLUR_WORK_SIGMA, 1.0)))))
    # a weak blur runs small too, so the cost stays flat: the 2×2 steps and the upsampling blur
    # by about 0.4 × the scale factor themselves, which is under the weakest blur asked for
    levels = max(levels, int(np.ceil(np.log2(max(short / BLUR_MAX_LINES, 1.0)))))
    while levels and short >> levels < 8:  # keep the small picture big enough to blur
        levels -= 1
    return levels, sigma / (1 << levels)


def _background_weight(mask: np.ndarray) -> np.ndarray:
    # (1 − mask)⁴: the mask's soft edge still holds some of the person, so it counts for little
    weight = cv2.subtract(1.0, mask)
    weight = cv2.multiply(weight, weight)
    return cv2.multiply(weight, weight)


def masked_blur(
    picture: np.ndarray, mask: np.ndarray, strength: float, small: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """The background of `picture` ((H, W, 3) uint8) blurred without the person (`mask`:
    (H, W) float32, 1 = person): a normalised convolution at reduced resolution; a new
    (H, W, 3) uint8 array. Deep inside the person no background is near, and what comes out
    there is meaningless — the person covers it. `small`: the same picture and mask already
    reduced (`Frame.small`), started from when they are at least as large as the blur's size."""
    height, width = picture.shape[:2]
    levels, sigma = blur_plan(strength, width, height)
    size = (width >> levels, height >> levels)  # what `levels` halvings give
    if small is not None and small[0].shape[1] >= size[0] and small[0].shape[0] >= size[1]:
        reduced, reduced_mask = shrink(small[0], size), shrink(small[1], size)
    else:
        reduced, reduced_mask = halve(picture, levels), halve(mask, levels)
    small_picture = reduced.astype(np.float32)
    weight = _background_weight(reduced_mask)
    # OpenCV's element-wise ops instead of numpy broadcasting: several times faster at this size
    num = cv2.GaussianBlur(cv2.multiply(small_picture, cv2.merge((weight, weight, weight))), (0, 0), sigma,
                           borderType=cv2.BORDER_REPLICATE)
    den = cv2.max(cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE), 1e-3)
    blurred = cv2.divide(num, cv2.merge((den, den, den)), dtype=cv2.CV_8U)
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)


def composite(person: np.ndarray, backdrop: np.ndarray, mask: np.ndarray, *, into_backdrop: bool = False) -> np.ndarray:
    """mask × person + (1 − mask) × backdrop, (H, W, 3) uint8 in and out (`mask`: (H, W)
    float32 in [0, 1]): a new array, or `backdrop` itself when the caller owns it and says
    `into_backdrop`. Where the mask is 1 the result is exactly `person`, where it is 0 exactly
    `backdrop`."""
    # 8-bit alpha and integer multiplies: about twice as fast as cv2.blendLinear on floats; and
    # only the mask's bounding box is blended, outside it the backdrop shows as it is
    alpha = cv2.convertScaleAbs(mask, alpha=255.0)
    x, y, w, h = cv2.boundingRect(alpha)
    out = backdrop if into_backdrop else backdrop.copy()
    if w and h:
        box = np.s_[y : y + h, x : x + w]
        a = alpha[box]
        a3 = cv2.merge((a, a, a))
        front = cv2.multiply(person[box], a3, scale=1 / 255)
        back = cv2.multiply(backdrop[box], cv2.bitwise_not(a3), scale=1 / 255)
        cv2.add(front, back, dst=out[box])
    return out


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, int(3.0 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (kernel / kernel.sum()).to(dtype)


def masked_blur_tensor(image: torch.Tensor, mask: torch.Tensor, strength: float) -> torch.Tensor:
    """`masked_blur` in torch: image (3, H, W) in [0, 1], mask (1, H, W) → a new (3, H, W)."""
    _, height, width = image.shape
    levels, sigma = blur_plan(strength, width, height)
    small = torch.cat([image, mask])[None]
    if levels:
        small = F.interpolate(small, size=(height >> levels, width >> levels), mode="area")
    weight = (1.0 - small[:, 3:4]) ** 4
    small = torch.cat([small[:, :3] * weight, weight], dim=1)  # (1, 4, h, w): one separable pass
    kernel = _gaussian_kernel(sigma, image.device, image.dtype)
    pad = kernel.numel() // 2
    channels = small.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    small = F.conv2d(F.pad(small, (pad, pad, 0, 0), mode="replicate"), horizontal, groups=channels)
    small = F.conv2d(F.pad(small, (0, 0, pad, pad), mode="replicate"), vertical, groups=channels)
    blurred = small[:, :3] / small[:, 3:4].clamp_min(1e-3)
    if levels:
        blurred = F.interpolate(blurred, size=(height, width), mode="bilinear", align_corners=False)
    return blurred[0].clamp_(0.0, 1.0)


class BackgroundEffect(Effect):
    name = "background"
    Params = BackgroundParams
    params: BackgroundParams
    needs_mask = True

    def __init__(self, params: BackgroundParams, context: EffectContext | None = None):
        super().__init__(params, context)
        self._image: np.ndarray | None = None
        self._backdrops: dict[tuple[Any, ...], Any] = {}
        self._video: VideoLoop | None = None
        self._scene: GeneratedScene | None = None
        self._unavailable_logged = False
        try:
            if "image" in params.shown:
                self._image = self._load_image(params.image)  # type: ignore[arg-type]
            if "video" in params.shown:
                self._video = self._open_video(params.video)  # type: ignore[arg-type]
            if params.mode == "generated":
                self._open_scene(params)
        except BaseException:
            self.close()  # a video thread started before a later check failed must not leak
            raise

    # ---- set-up: every reference is checked here, before any frame -------------------------
    def _invalid(self, field: str, message: str) -> Unprocessable:
        return Unprocessable(f"invalid parameters: background.{field}: {message}",
                             errors=[{"field": field, "message": message}])

    def _resolve(self, field: str, ref: str) -> Path:
        if self.context.assets is None:
            raise self._invalid(field, f"no asset store to find {ref!r} in")
        try:
            return self.context.assets.resolve(ref)
        except Unprocessable as exc:
            raise self._invalid(field, exc.detail) from None

    def _load_image(self, ref: str) -> np.ndarray:
        if self.context.assets is None:
            raise self._invalid("image", f"no asset store to find {ref!r} in")
        try:
            return self.context.assets.load_image(ref)
        except Unprocessable as exc:
            raise self._invalid("image", exc.detail) from None

    def _open_video(self, ref: str) -> VideoLoop:
        path = self._resolve("video", ref)
        try:
            loop = VideoLoop(path, name=f"livegen-background-video-{path.stem}")
        except Exception as exc:  # PyAV raises many kinds for bad files
            raise self._invalid("video", f"{ref!r} is not a readable video ({exc})") from None
        loop.start()
        return loop

    def _open_scene(self, params: BackgroundParams) -> None:
        generator = self.context.generator
        if generator is None:
            check_params(SceneParams, params.scene_settings, "generated")  # bad settings are 422 anyway
            return
        self._scene = generator.scene(params.prompt or "", params.scene_settings)

    # ---- live changes ----------------------------------------------------------------------
    def retunable(self, params: BackgroundParams) -> bool:  # type: ignore[override]
        old = self.params
        if (params.mode, params.fallback, params.image, params.video) != (old.mode, old.fallback, old.image, old.video):
            return False
        if params.mode == "generated" and (params.prompt, params.scene_settings) != (old.prompt, old.scene_settings):
            # without a scene, rebuilding is what checks the new settings (a 422 on any node)
            if self._scene is None or not hasattr(self._scene, "update"):
                return False
            if hasattr(self._scene, "check"):  # a 422 here, on the loop, not an error on the worker
                self._scene.check(params.scene_settings)
            return True
        return True  # blur, colours: read per frame (the backdrop cache is keyed by them)

    def retune(self, params: BackgroundParams) -> None:  # type: ignore[override]
        old, self.params = self.params, params
        if self._scene is not None and (params.prompt, params.scene_settings) != (old.prompt, old.scene_settings):
            self._scene.update(params.prompt, params.scene_settings)  # type: ignore[attr-defined]

    # ---- per frame -------------------------------------------------------------------------
    @property
    def prepares_ahead(self) -> bool:
        return self._scene is None  # only a generated scene's prepare queues a frame

    def prepare(self, frame: Frame) -> None:
        if self._scene is not None and hasattr(self._scene, "prepare"):
            self._scene.prepare(frame)  # lets several streams share the generator's device calls

    def apply(self, frame: Frame) -> None:
        if frame.mask is None or frame.mask_rgb is None:
            raise RuntimeError("background needs a mask: run segmentation before it")
        mode: str = self.params.mode
        generated: np.ndarray | torch.Tensor | None = None
        if mode == "generated":
            generated = self._generated(frame)
            if generated is None:
                frame.notes.add("background_fallback")
                mode = self.params.fallback
        # OpenCV beats torch on a CPU; on a GPU node the compositing stays on the device
        if not frame.device_path:
            self._apply_host(frame, mode, generated)
        else:
            self._apply_device(frame, mode, generated)

    def _generated(self, frame: Frame) -> np.ndarray | torch.Tensor | None:
        generator = self.context.generator
        reason = generator.unavailable() if generator is not None else "the node has no scene generator"
        if reason is not None or self._scene is None:
            if not self._unavailable_logged:
                log.warning("generated background shows its fallback (%s): %s", self.params.fallback, reason)
                self._unavailable_logged = True
            return None
        picture = self._scene.background(frame)
        frame.notes.update(getattr(self._scene, "notes", ()) or ())
        return picture

    def _static(self, mode: str, width: int, height: int) -> np.ndarray:
        """The image, colour or key colour at the frame's size, made once per size."""
        key = ("host", mode, width, height, self.params.color, self.params.key_color)
        cached = self._backdrops.get(key)
        if cached is None:
            if mode == "image":
                cached = cover_fit(self._image, width, height)  # type: ignore[arg-type]
            else:
                cached = np.empty((height, width, 3), np.uint8)
                cached[:] = hex_rgb(self.params.color if mode == "color" else self.params.key_color)
            self._remember(key, cached)
        return cached

    def _static_tensor(self, mode: str, like: torch.Tensor) -> torch.Tensor:
        """`_static` on the device, uploaded once per size, not on every frame."""
        _, height, width = like.shape
        key = ("device", mode, width, height, self.params.color, self.params.key_color, like.device, like.dtype)
        cached = self._backdrops.get(key)
        if cached is None:
            cached = rgb_to_tensor(self._static(mode, width, height), like.device, like.dtype)
            self._remember(key, cached)
        return cached

    def _remember(self, key: tuple[Any, ...], backdrop: Any) -> None:
        if len(self._backdrops) >= CACHED_BACKDROPS:  # sizes and colours changed many times
            self._backdrops.clear()
        self._backdrops[key] = backdrop

    def _apply_host(self, frame: Frame, mode: str, generated: np.ndarray | torch.Tensor | None) -> None:
        width, height = frame.size
        picture, mask = frame.rgb, frame.mask_rgb
        owned = False  # whether the backdrop is this frame's own, to composite into
        if generated is not None:
            if isinstance(generated, torch.Tensor):
                generated = tensor_to_rgb(generated)
            backdrop = cover_fit(generated, width, height)
        elif mode == "blur":
            backdrop, owned = masked_blur(picture, mask, self.params.blur, frame.small_input), True  # type: ignore[arg-type]
        elif mode == "video":
            backdrop = self._video.latest(width, height)  # type: ignore[union-attr]
        else:
            backdrop = self._static(mode, width, height)
        frame.rgb = composite(picture, backdrop, mask, into_backdrop=owned)  # type: ignore[arg-type]

    def _apply_device(self, frame: Frame, mode: str, generated: np.ndarray | torch.Tensor | None) -> None:
        image = frame.image
        _, height, width = image.shape
        mask = frame.mask.to(image.device, image.dtype)  # type: ignore[union-attr]
        if isinstance(generated, torch.Tensor):
            backdrop = generated.to(image.device, image.dtype)
            if backdrop.shape[1:] != (height, width):
                backdrop = F.interpolate(backdrop[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        elif generated is not None:
            backdrop = rgb_to_tensor(cover_fit(generated, width, height), image.device, image.dtype)
        elif mode == "blur":
            backdrop = masked_blur_tensor(image, mask, self.params.blur)
        elif mode == "video":
            backdrop = rgb_to_tensor(self._video.latest(width, height), image.device, image.dtype)  # type: ignore[union-attr]
        else:
            backdrop = self._static_tensor(mode, image)
        frame.image = torch.lerp(backdrop, image, mask)

    def close(self) -> None:
        if self._video is not None:
            self._video.stop(VIDEO_JOIN_S)
            self._video = None
        if self._scene is not None:
            self._scene.close()
            self._scene = None
        self._backdrops.clear()
