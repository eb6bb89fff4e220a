"""The effect protocol.

An effect declares its parameters as a pydantic model; `Effect.create` validates raw parameters
before any device work and raises `Unprocessable` naming each bad field. The worker runs a chain
on one `Frame` at a time: first every effect's `prepare` (start work that can overlap, e.g. hand
a CPU model to the pool), then every effect's `apply` in order, each changing the frame in
place. Both run only on the device worker thread. An effect instance belongs to one stream, so
it may keep state from frame to frame (a mask history, a rendered overlay).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from livegen.errors import Unprocessable
from livegen.media.assets import AssetStore
from livegen.media.convert import rgb_to_tensor, tensor_to_rgb


class Frame:
    """One picture on its way through a stream's effect chain.

    The picture is held as whichever of two forms the last effect produced, and converted to
    the other only when an effect asks for it: `image`, a (3, H, W) float RGB tensor in [0, 1]
    on the worker's device (what GPU effects use), or `rgb`, an (H, W, 3) uint8 array on the
    host (what OpenCV and CPU models use, and far cheaper on a CPU-only node). Assigning one
    form discards the other.

    On the device path (a CUDA worker) effects that can run on the device do, and the frame
    moves between host and device as little as it can: the picture goes up once, and when
    segmentation has left a mask on the host by then, the mask rides along in the same copy (a
    fourth 8-bit channel); the result comes back once for the encoder. `transfers` counts the
    copies, for the stream's stats.
    """

    def __init__(
        self,
        index: int,
        *,
        rgb: np.ndarray | None = None,
        image: torch.Tensor | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        pool: Executor | None = None,
        over_budget: bool = False,
        device_path: bool | None = None,
    ):
        if (rgb is None) == (image is None):
            raise ValueError("a frame starts from exactly one of rgb or image")
        self.index = index
        """Frame number within the stream."""
        self.source: np.ndarray = rgb if rgb is not None else tensor_to_rgb(image)  # type: ignore[arg-type]
        """(H, W, 3) uint8 RGB of the input picture on the host, for CPU models; never modified."""
        self.device = device or (image.device if image is not None else torch.device("cpu"))
        self.dtype = image.dtype if image is not None else dtype
        self.device_path = self.device.type != "cpu" if device_path is None else device_path
        """Whether effects should work on the device (`image`) rather than the host (`rgb`):
        a CUDA worker's frames; tests may set it to run the device path on CPU tensors."""
        self.transfers = 0
        """Host↔device copies of this frame's picture or mask so far (device path only)."""
        self._rgb = rgb
        self._image = image
        self._mask: torch.Tensor | None = None
        self.mask_rgb: np.ndarray | None = None
        """The person mask on the host as (H, W) float32, 1 where the person is; set with
        `set_mask` by segmentation, for CPU compositing."""
        self.small: tuple[np.ndarray, np.ndarray] | None = None
        """(picture, mask): `source` and the mask at the reduced size segmentation worked at,
        for effects that work small (a blurred background) and would otherwise shrink the
        full-size picture again; set with `set_mask`. It shows the input picture: an effect
        that changed the picture (`rgb is not source`) cannot use it."""
        self.pool = pool
        """Small CPU thread pool for CPU-only helpers that can run beside device work."""
        self.timings_ms: dict[str, float] = {}
        """Time each effect took on this frame (prepare + apply), by effect name."""
        self.notes: set[str] = set()
        """What was degraded or fell back on this frame (e.g. "mask_reused"), for the stats."""
        self.over_budget = over_budget
        """The stream's recent frames took longer than the engine's per-frame budget: effects
        should shed optional work on this frame (reuse a mask, skip a refinement) and say so
        in `notes`, rather than let the stream fall behind."""

    # ---- the picture ----------------------------------------------------------------------
    @property
    def image(self) -> torch.Tensor:
        if self._image is None:
            if self.device_path and self.mask_rgb is not None and self._mask is None:
                self._upload_with_mask()
            else:
                self._image = rgb_to_tensor(self._rgb, self.device, self.dtype)  # type: ignore[arg-type]
                self.transfers += int(self.device_path)
        return self._image

    @image.setter
    def image(self, value: torch.Tensor) -> None:
        self._image, self._rgb = value, None

    @property
    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = tensor_to_rgb(self._image)  # type: ignore[arg-type]
            self.transfers += int(self.device_path)
        return self._rgb

    @rgb.setter
    def rgb(self, value: np.ndarray) -> None:
        self._rgb, self._image = value, None

    @property
    def on_host(self) -> bool:
        """Whether the current picture is the host form (no conversion needed to read `rgb`)."""
        return self._rgb is not None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        height, width = self.source.shape[:2]
        return width, height

    # ---- the person mask ------------------------------------------------------------------
    def set_mask(self, mask: np.ndarray, small: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """The person mask, (H, W) float32 in [0, 1] on the host (segmentation's result), and
        optionally `small` (see the attribute). It reaches the device only if an effect reads
        `mask` there."""
        self.mask_rgb, self._mask, self.small = mask, None, small

    @property
    def small_input(self) -> tuple[np.ndarray, np.ndarray] | None:
        """`small` while the picture is still the input one on the host, else None."""
        if self.small is None or self._rgb is not self.source:
            return None
        return self.small

    @property
    def mask(self) -> torch.Tensor | None:
        """(1, H, W) float in [0, 1], 1 where the person is, on the frame's device (None before
        segmentation). On the CPU it shares the host mask's memory."""
        if self._mask is None and self.mask_rgb is not None:
            if not self.device_path:
                self._mask = torch.from_numpy(self.mask_rgb).unsqueeze(0)
            elif self._image is None and self._rgb is not None:
                self._upload_with_mask()
            else:
                pixels = torch.from_numpy(self.mask_rgb)
                if self.device.type == "cuda":
                    pixels = pixels.pin_memory().to(self.device, non_blocking=True)
                self._mask = pixels.unsqueeze(0).to(self.dtype)
                self.transfers += 1
        return self._mask

    @mask.setter
    def mask(self, value: torch.Tensor | None) -> None:
        """A mask made on the device (or by a test) as it is; `mask_rgb` is left alone."""
        self._mask = value

    def _upload_with_mask(self) -> None:
        """Picture and mask to the device in one copy: RGB plus the mask as an 8-bit alpha."""
        rgb, mask = self._rgb, self.mask_rgb
        assert rgb is not None and mask is not None
        packed = np.empty((*rgb.shape[:2], 4), np.uint8)
        packed[..., :3] = rgb
        np.multiply(mask, 255.0, out=packed[..., 3], casting="unsafe")  # truncates; + 0.5 below
        pixels = torch.from_numpy(packed)
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        planes = pixels.permute(2, 0, 1).to(self.dtype)
        self._image = planes[:3].div_(255.0)
        self._mask = planes[3:].add_(0.5).div_(255.5).clamp_(0.0, 1.0)
        self.transfers += 1


class GeneratedScene(Protocol):
    """One stream's pictures from a `SceneGenerator` (the diffusion stage): a generated
    background, or in `background` mode the camera picture through img2img, which is also what
    `stylize` shows. Scenes may lack `prepare`, `update` and `notes` (a generator of stills);
    the effects then do without them."""

    def prepare(self, frame: Frame) -> None:
        """Queue `frame` early, so that several streams prepared before any `background()`
        share the generator's device calls."""

    def background(self, frame: Frame) -> np.ndarray | torch.Tensor | None:
        """The picture for `frame` at its size — (H, W, 3) uint8 RGB on the host or a
        (3, H, W) float tensor in [0, 1] on the device — or None when there is none yet (the
        effect then shows its fallback for this frame); `notes` then say why."""

    def update(self, prompt: str | None, params: Mapping[str, Any] | None) -> None:
        """A new prompt and/or parameters, landing at a frame boundary (any thread)."""

    notes: set[str]
    """What the last `background()` degraded or fell back on, for the frame's notes."""

    def close(self) -> None: ...


class SceneGenerator(Protocol):
    """What effects ask for generated pictures (`background` in `generated` mode, `stylize`);
    the diffusion stage fills it in, the effects never import it."""

    def unavailable(self) -> str | None:
        """Why no scene can be generated now (no GPU, no model folder), or None when it can."""

    def scene(self, prompt: str, params: Mapping[str, Any]) -> GeneratedScene:
        """A scene for one stream; `params` as `generation.SceneParams` (`Unprocessable`
        naming the bad one under `generated.`)."""


@dataclass(frozen=True)
class EffectContext:
    """What the node lends every effect it builds: where assets are, what can generate scenes."""

    assets: AssetStore | None = None
    """Where images and videos named in the parameters are found (see media.assets)."""
    generator: SceneGenerator | None = None
    """The node's scene generator, or None when the node has none (no diffusion stage)."""


class EffectParams(BaseModel):
    """Base of every effect's parameters: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=EffectParams)


def check_params(model: type[P], raw: Mapping[str, Any] | None, owner: str) -> P:
    """`raw` as `model`, or `Unprocessable` naming every bad field under `owner` (an effect's
    name, or `generated` for what a scene generator is asked)."""
    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or owner, "message": e["msg"]} for e in exc.errors()
        ]
        detail = "; ".join(f"{owner}.{e['field']}: {e['message']}" for e in errors)
        raise Unprocessable(f"invalid parameters: {detail}", errors=errors) from None


class Effect:
    name: ClassVar[str]
    Params: ClassVar[type[EffectParams]] = EffectParams
    touches_pixels: ClassVar[bool] = True
    """False for effects that leave the frame as it is, so the worker can skip conversions."""
    needs_mask: ClassVar[bool] = False
    """True for effects that read `frame.mask`: a chain must run `segmentation` before them."""
    params_read_per_frame: ClassVar[bool] = False
    """True for effects that read their parameters on every frame and build nothing from them:
    then any new parameters are taken in place (`retunable`)."""

    def __init__(self, params: EffectParams, context: EffectContext | None = None):
        self.params = params
        self.context = context or EffectContext()

    @classmethod
    def validate(cls, raw: Mapping[str, Any] | None = None) -> EffectParams:
        """`raw` checked against `Params`; `Unprocessable` naming each bad field."""
        return check_params(cls.Params, raw, cls.name)

    @property
    def prepares_ahead(self) -> bool:
        """Whether `prepare` may run for the next frame before `apply` ran for this one (a job
        lane overlaps the two): always for an effect without a `prepare` of its own; an effect
        whose `prepare` keeps what `apply` needs in a single place must not (the default)."""
        return type(self).prepare is Effect.prepare

    @classmethod
    def create(cls, raw: Mapping[str, Any] | None = None, context: EffectContext | None = None) -> Effect:
        return cls(cls.validate(raw), context)

    def retunable(self, params: EffectParams) -> bool:
        """Whether this instance can switch to `params` in place (`retune`), keeping its state
        (a warm model, a mask history), instead of being rebuilt. Must not touch the device:
        it is asked on the event loop. The default: only when nothing changes, or always when
        `params_read_per_frame`."""
        return self.params_read_per_frame or params == self.params

    def retune(self, params: EffectParams) -> None:
        """Switch to `params` (which `retunable` accepted); runs on the worker thread between
        two frames, so a frame never sees half of a change."""
        self.params = params

    def prepare(self, frame: Frame) -> None:
        """Start work for `frame` that can overlap the effects before this one (optional)."""

    def apply(self, frame: Frame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the effect holds (models, threads); called when its chain is replaced."""
