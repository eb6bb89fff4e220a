"""`DiffusionGenerator`: the node's `SceneGenerator` (see effects.base), built on one
`DenoisingBatcher`.

The app builds one generator per device worker and lends it to every effect through
`EffectContext(generator=...)`. It loads the models when `start()`ed (on its own thread, so the
node is up while they load) or `load()`ed; until then, and whenever loading failed, the diffusion
is off, `unavailable()` says why (the missing-model message names what to put where) and effects
show their fallback.

`scene(prompt, params)` gives one stream a `DiffusionScene`:
- `background` mode: every camera frame goes through img2img (the stream's denoiser) and the
  result, at the frame's size, is the background the `generated` background effect composites
  the real person over, or the whole picture the `stylize` effect shows;
- `scene` mode: one still per (prompt, seed, size, steps) made from noise and reused (cheapest);
  stills are shared by every stream that asks for the same one.

Structure control (`controlnet: canny | depth`) needs the node's ControlNet for that kind: a
scene that asks for one the settings do not name, or one that failed to load, is refused with a
422 that names the setting (`check_control`). Its parameters retune live like the others.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from livegen.config import DiffusionSettings
from livegen.diffusion.batcher import DenoisingBatcher
from livegen.diffusion.denoiser import StreamDenoiser, Ticket, working_size
from livegen.diffusion.models import (
    CONTROL_SETTINGS,
    DiffusionModels,
    MissingModel,
    ModelSpec,
    load,
)
from livegen.effects.base import check_params
from livegen.effects.generation import GenerationParams, SceneParams
from livegen.errors import Unprocessable
from livegen.media.convert import tensor_to_rgb

log = logging.getLogger(__name__)

MAX_STILLS = 16


def fit_to_frame(image: torch.Tensor, frame_size: tuple[int, int], device: torch.device) -> np.ndarray | torch.Tensor:
    """(3, h, w) in [0, 1] → the frame's size: a device tensor on a GPU, (H, W, 3) uint8 on the CPU."""
    width, height = frame_size
    if image.shape[1:] != (height, width):
        image = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
    return tensor_to_rgb(image) if device.type == "cpu" else image


class DiffusionScene:
    """One stream's generated pictures (see the module docstring); a `GeneratedScene`."""

    def __init__(self, generator: DiffusionGenerator, prompt: str, params: SceneParams):
        self.generator = generator
        self.prompt = prompt
        self.params = params
        self._denoiser: StreamDenoiser | None = None
        self._ticket: Ticket | None = None
        self.notes: set[str] = set()
        """What the last frame degraded or fell back on (copied into the frame's notes)."""
        self._ensure_denoiser()

    def _ensure_denoiser(self) -> StreamDenoiser | None:
        """The denoiser, opened as soon as the batcher exists (a scene may predate the models);
        opening it starts encoding the prompt."""
        if self._denoiser is None and self.generator.unavailable() is None:
            self._denoiser = self.generator.open_denoiser(self.prompt, self.params)
        return self._denoiser

    def check(self, params: Mapping[str, Any]) -> SceneParams:
        """`params` checked as `update` would take them (`Unprocessable` naming what is wrong);
        no device work, so an effect may ask on the event loop before it retunes."""
        return self.generator.check(params)

    def update(self, prompt: str | None = None, params: Mapping[str, Any] | None = None) -> None:
        """Change the prompt / parameters without a new scene: the video keeps running on the
        old ones until the new prompt is encoded (any thread)."""
        checked = self.check(params) if params is not None else None
        if self._denoiser is not None:
            self._denoiser.update(prompt, checked)
        if prompt is not None:
            self.prompt = prompt
        if checked is not None:
            self.params = checked

    def prepare(self, frame: Any) -> None:
        """Queue the frame (optional): scenes of several streams prepared before any
        `background()` share one UNet call."""
        if self.params.mode == "background" and self._ticket is None and self._ensure_denoiser() is not None:
            if self.generator.unavailable() is None:
                self._ticket = self._submit(frame)

    def _submit(self, frame: Any) -> Ticket:
        denoiser = self._denoiser
        assert denoiser is not None
        ticket = denoiser.submit(frame.source, reuse=bool(getattr(frame, "over_budget", False)))
        if not ticket.skipped and getattr(frame, "device_path", False):
            # the working-size picture (shrunk on the host) crossed to the device in prepare,
            # before the mask exists: one small copy, so every stream's frame joins one UNet call
            frame.transfers += 1
        return ticket

    def background(self, frame: Any) -> np.ndarray | torch.Tensor | None:
        self.notes = set()
        batcher = self.generator.batcher
        if self._ensure_denoiser() is None or batcher is None or self.generator.unavailable() is not None:
            self.notes.add("diffusion_unavailable")
            return None
        if self.params.mode == "scene":
            still = self.generator.still(self._denoiser, frame.size)  # type: ignore[arg-type]
            if still is None:
                self.notes.add("diffusion_prompt_pending")
                return None
            return fit_to_frame(still, frame.size, frame.device)
        ticket, self._ticket = self._ticket, None
        if ticket is None:
            ticket = self._submit(frame)
        output = batcher.collect(ticket)
        self.notes |= ticket.notes
        if output is None:
            return None
        return fit_to_frame(output, frame.size, frame.device)

    def close(self) -> None:
        denoiser, self._denoiser = self._denoiser, None
        if denoiser is not None:
            denoiser.close()


class DiffusionGenerator:
    """Owns the denoising batcher of one device (see the module docstring)."""

    def __init__(self, settings: DiffusionSettings, device: torch.device, *, models: DiffusionModels | None = None):
        self.settings = settings
        self.device = device
        self.batcher: DenoisingBatcher | None = None
        self._reason: str | None = "the diffusion models are not loaded yet"
        self._models = models
        self._loader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stills: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()
        self.spec = ModelSpec.from_settings(settings)
        """What `load()` loads, the control parts included."""
        if not settings.enabled:
            self._reason = "diffusion is disabled (diffusion.enabled: false)"
        elif device.type != "cuda" and not settings.allow_cpu:
            self._reason = (
                "no CUDA device: diffusion on the CPU is far below frame rate "
                "(set diffusion.allow_cpu: true to run it anyway)"
            )

    def unavailable(self) -> str | None:
        return self._reason

    @property
    def loading(self) -> bool:
        """Whether `start()`'s thread is still loading the models (and warming them up)."""
        return self._loader is not None and self._loader.is_alive()

    @property
    def path(self) -> str | None:
        """What runs (`cuda fp16 channels-last compiled`…), or None while there is no batcher."""
        return self.batcher.path if self.batcher is not None else None

    def describe(self) -> dict[str, Any]:
        """State for the API, metrics and doctor."""
        batcher = self.batcher
        return {
            "model": self.settings.model,
            "available": self._reason is None,
            "reason": self._reason,
            "path": batcher.path if batcher else None,
            "fallbacks": list(batcher.fallbacks) if batcher else [],
            "unet_calls": batcher.unet_calls if batcher else 0,
            "controlnets": sorted(batcher.controlnets) if batcher else [],
            "control_missing": dict(batcher.models.control_missing) if batcher else {},
        }

    def load(self) -> None:
        """Load the models and build the batcher now (blocking); failures land in `unavailable()`."""
        settings = self.settings
        if not settings.enabled or (self.device.type != "cuda" and not settings.allow_cpu):
            return
        try:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            models = self._models or load(self.spec, self.device, dtype)
            batcher = DenoisingBatcher(
                models, self.device, dtype=dtype, compile=settings.compile, cuda_graphs=settings.cuda_graphs,
                channels_last=settings.channels_last, max_batch=settings.max_batch,
                prompt_cache=settings.prompt_cache,
            )
            batcher.warmup((512, 512) if self.device.type == "cuda" else (64, 64))
        except MissingModel as exc:
            log.warning("diffusion off: %s", exc.detail)
            self._reason = exc.detail
            return
        except Exception as exc:  # any other failure also leaves the node running without diffusion
            log.exception("diffusion off: building the batcher failed")
            self._reason = f"building the diffusion stage failed: {type(exc).__name__}: {exc}"
            return
        self.batcher = batcher
        self._reason = None
        log.info("diffusion ready: %s (%s)", settings.model, batcher.path)

    def start(self) -> None:
        """`load()` on a thread of its own; `close()` waits for it."""
        if self._loader is None:
            self._loader = threading.Thread(target=self.load, name="livegen-diffusion-load", daemon=True)
            self._loader.start()

    def scene(self, prompt: str, params: Mapping[str, Any]) -> DiffusionScene:
        """A scene for one stream; the effects have checked the prompt, `params` are checked here."""
        return DiffusionScene(self, prompt, self.check(params))

    def check(self, params: Mapping[str, Any] | None) -> SceneParams:
        """`params` as `SceneParams`, and their ControlNet available here; else `Unprocessable`
        naming the field under `generated.` (no device work)."""
        checked = check_params(SceneParams, params, "generated")
        self.check_control(checked)
        return checked

    def control_unavailable(self, kind: str) -> str | None:
        """Why this node cannot follow `kind` ("canny", "depth") with a ControlNet, or None.
        Judged from the settings until the models are loaded, then from what loaded."""
        spec = self.spec
        if kind == "none":
            return None
        example = {"canny": "thibaud/controlnet-sd21-canny-diffusers", "depth": "thibaud/controlnet-sd21-depth-diffusers"}
        setting = CONTROL_SETTINGS[kind]
        if spec.controlnet_for(kind) is None:
            return (f"controlnet {kind!r} needs a ControlNet model and {setting} is not set: set it to a folder or cached "
                    f"Hugging Face id of a {kind} ControlNetModel for the model's family (e.g. {example[kind]} for "
                    f"sd-turbo; `livegen models pull ID` fetches one)")
        if kind == "depth" and spec.depth_model is None:
            return ("controlnet 'depth' needs a depth estimator on this machine and diffusion.depth_model is not set: "
                    "set it to a folder or cached id of a transformers depth model (e.g. Intel/dpt-hybrid-midas or "
                    "depth-anything/Depth-Anything-V2-Small-hf; `livegen models pull ID` fetches one)")
        batcher = self.batcher
        if batcher is not None and kind not in batcher.controlnets:
            reason = batcher.models.control_missing.get(kind, "it did not load")
            return f"controlnet {kind!r} is unavailable on this node: {reason}"
        return None

    def check_control(self, params: GenerationParams) -> None:
        """`Unprocessable` when `params` ask for a ControlNet this node does not have."""
        reason = self.control_unavailable(params.controlnet)
        if reason is not None:
            raise Unprocessable(f"invalid parameters: generated.controlnet: {reason}",
                                errors=[{"field": "controlnet", "message": reason}])

    def open_denoiser(self, prompt: str, params: GenerationParams) -> StreamDenoiser | None:
        """A denoiser on this device's batcher; None while there is no batcher."""
        return self.batcher.open_denoiser(params, prompt) if self.batcher is not None else None

    def still(self, denoiser: StreamDenoiser, frame_size: tuple[int, int]) -> torch.Tensor | None:
        """The still for `denoiser`'s prompt and seed (made on first use, then shared)."""
        embeddings = denoiser.conditioning.current()
        request = denoiser.conditioning.current_request
        if embeddings is None or request is None or self.batcher is None:
            return None
        p = denoiser.take_params()  # a new seed, step count or size makes another still
        size = working_size(*frame_size, p.size)
        key = (request, p.seed, p.steps, size)
        with self._lock:
            still = self._stills.get(key)
            if still is not None:
                self._stills.move_to_end(key)
                return still
        still = self.batcher.generate_still(embeddings, size, p.steps, p.seed)
        with self._lock:
            self._stills[key] = still
            while len(self._stills) > MAX_STILLS:
                self._stills.popitem(last=False)
        return still

    def close(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            loader.join(timeout=60)
        batcher, self.batcher = self.batcher, None
        self._reason = "the diffusion stage is closed"
        if batcher is not None:
            batcher.close()
        self._stills.clear()
