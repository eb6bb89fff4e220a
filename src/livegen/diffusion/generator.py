"""`DiffusionGenerator`: the node's `BackgroundGenerator`, built on one `DiffusionEngine`.

The app builds one generator per device worker and lends it to every effect through
`EffectContext(generator=...)`. It loads the models when `start()`ed (on its own thread, so the
node is up while they load) or `load()`ed; until then, and whenever loading failed, the diffusion
is off, `unavailable()` says why (the missing-model message names what to put where) and effects
show their fallback.

`scene(prompt, params)` gives one stream a `DiffusionScene`:
- `background` mode: every camera frame goes through img2img (the stream batch) and the result,
  at the frame's size, is the background the `generated` background effect composites the real
  person over;
- `scene` mode: one still per (prompt, seed, size, steps) made from noise and reused (cheapest);
  stills are shared by every stream that asks for the same one.
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

from livegen.diffusion.engine import DiffusionEngine
from livegen.diffusion.models import DiffusionModels, MissingModel, ModelSpec, load
from livegen.diffusion.params import GenerationParams, SceneParams, validate
from livegen.diffusion.settings import DiffusionSettings
from livegen.diffusion.stream import DiffusionStream, Ticket, working_size

log = logging.getLogger(__name__)

MAX_STILLS = 16


def fit_to_frame(image: torch.Tensor, frame_size: tuple[int, int], device: torch.device) -> np.ndarray | torch.Tensor:
    """(3, h, w) in [0, 1] → the frame's size: a device tensor on a GPU, (H, W, 3) uint8 on the CPU."""
    width, height = frame_size
    if image.shape[1:] != (height, width):
        image = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
    if device.type == "cpu":
        pixels = image.float().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
        return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())
    return image


class DiffusionScene:
    """One stream's generated background (see the module docstring)."""

    def __init__(self, generator: DiffusionGenerator, prompt: str, params: SceneParams):
        self.generator = generator
        self.prompt = prompt
        self.params = params
        self._stream: DiffusionStream | None = None
        self._ticket: Ticket | None = None
        self.notes: set[str] = set()
        """What the last frame degraded or fell back on (copied into the frame's notes)."""
        self._ensure_stream()

    def _ensure_stream(self) -> DiffusionStream | None:
        """The stream, opened as soon as the engine exists (a scene may predate the models);
        opening it starts encoding the prompt."""
        if self._stream is None and self.generator.unavailable() is None:
            self._stream = self.generator.stream(self.prompt, self.params, "scene")
        return self._stream

    def update(self, prompt: str | None = None, params: Mapping[str, Any] | None = None) -> None:
        """Change the prompt / parameters without a new scene: the video keeps running on the
        old ones until the new prompt is encoded (any thread)."""
        checked = validate(SceneParams, params, "generated") if params is not None else None
        if self._stream is not None:
            self._stream.update(prompt, checked)
        if prompt is not None:
            self.prompt = prompt
        if checked is not None:
            self.params = checked

    def prepare(self, frame: Any) -> None:
        """Queue the frame (optional): scenes of several streams prepared before any
        `background()` share one UNet call."""
        if self.params.mode == "background" and self._ticket is None and self._ensure_stream() is not None:
            if self.generator.unavailable() is None:
                self._ticket = self._submit(frame)

    def _submit(self, frame: Any) -> Ticket:
        stream = self._stream
        assert stream is not None
        return stream.submit(frame.source, reuse=bool(getattr(frame, "over_budget", False)))

    def background(self, frame: Any) -> np.ndarray | torch.Tensor | None:
        self.notes = set()
        engine = self.generator.engine
        if self._ensure_stream() is None or engine is None or self.generator.unavailable() is not None:
            self.notes.add("diffusion_unavailable")
            return None
        if self.params.mode == "scene":
            still = self.generator.still(self._stream, frame.size)
            if still is None:
                self.notes.add("diffusion_prompt_pending")
                return None
            return fit_to_frame(still, frame.size, frame.device)
        ticket, self._ticket = self._ticket, None
        if ticket is None:
            ticket = self._submit(frame)
        output = engine.collect(ticket)
        self.notes |= ticket.notes
        if output is None:
            return None
        return fit_to_frame(output, frame.size, frame.device)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


class DiffusionGenerator:
    """Owns the diffusion engine of one device (see the module docstring)."""

    def __init__(self, settings: DiffusionSettings, device: torch.device, *, models: DiffusionModels | None = None):
        self.settings = settings
        self.device = device
        self.engine: DiffusionEngine | None = None
        self._reason: str | None = "the diffusion models are not loaded yet"
        self._models = models
        self._loader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stills: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()
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
    def path(self) -> str | None:
        """What runs (`cuda fp16 channels-last compiled`…), or None while there is no engine."""
        return self.engine.path if self.engine is not None else None

    def describe(self) -> dict[str, Any]:
        """State for the API, metrics and doctor."""
        engine = self.engine
        return {
            "model": self.settings.model,
            "available": self._reason is None,
            "reason": self._reason,
            "path": engine.path if engine else None,
            "fallbacks": list(engine.fallbacks) if engine else [],
            "unet_calls": engine.unet_calls if engine else 0,
        }

    def load(self) -> None:
        """Load the models and build the engine now (blocking); failures land in `unavailable()`."""
        settings = self.settings
        if not settings.enabled or (self.device.type != "cuda" and not settings.allow_cpu):
            return
        try:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            models = self._models or load(ModelSpec.from_settings(settings), self.device, dtype)
            engine = DiffusionEngine(
                models, self.device, dtype=dtype, compile=settings.compile, cuda_graphs=settings.cuda_graphs,
                channels_last=settings.channels_last, max_batch=settings.max_batch,
                prompt_cache=settings.prompt_cache,
            )
            engine.warmup((512, 512) if self.device.type == "cuda" else (64, 64))
        except MissingModel as exc:
            log.warning("diffusion off: %s", exc.detail)
            self._reason = exc.detail
            return
        except Exception as exc:  # any other failure also leaves the node running without diffusion
            log.exception("diffusion off: building the engine failed")
            self._reason = f"building the diffusion engine failed: {type(exc).__name__}: {exc}"
            return
        self.engine = engine
        self._reason = None
        log.info("diffusion ready: %s (%s)", settings.model, engine.path)

    def start(self) -> None:
        """`load()` on a thread of its own; `close()` waits for it."""
        if self._loader is None:
            self._loader = threading.Thread(target=self.load, name="livegen-diffusion-load", daemon=True)
            self._loader.start()

    def scene(self, prompt: str, params: Mapping[str, Any]) -> DiffusionScene:
        if not prompt or not prompt.strip():
            raise validate_error("prompt", "a generated background needs a prompt")
        return DiffusionScene(self, prompt, validate(SceneParams, params, "generated"))

    def stream(self, prompt: str, params: GenerationParams, name: str = "stylize") -> DiffusionStream | None:
        """A bare stream for effects that use the engine directly (`stylize`); None without one."""
        return self.engine.open_stream(params, prompt, name) if self.engine is not None else None

    def still(self, stream: DiffusionStream, frame_size: tuple[int, int]) -> torch.Tensor | None:
        """The still for `stream`'s prompt and seed (made on first use, then shared)."""
        embeddings = stream.conditioning.current()
        request = stream.conditioning.current_request
        if embeddings is None or request is None or self.engine is None:
            return None
        p = stream.params
        size = working_size(*frame_size, p.size)
        key = (request, p.seed, p.steps, size)
        with self._lock:
            still = self._stills.get(key)
            if still is not None:
                self._stills.move_to_end(key)
                return still
        still = self.engine.generate_still(embeddings, size, p.steps, p.seed)
        with self._lock:
            self._stills[key] = still
            while len(self._stills) > MAX_STILLS:
                self._stills.popitem(last=False)
        return still

    def close(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            loader.join(timeout=60)
        engine, self.engine = self.engine, None
        self._reason = "the diffusion stage is closed"
        if engine is not None:
            engine.close()
        self._stills.clear()


def validate_error(field: str, message: str) -> Exception:
    from livegen.errors import Unprocessable

    return Unprocessable(f"invalid parameters: generated.{field}: {message}", errors=[{"field": field, "message": message}])
