"""`StreamDenoiser`: one video stream's denoising batch (StreamDiffusion's idea, livegen's code).

With `steps` steps per frame, the denoiser keeps `steps − 1` latents in flight: slot k holds an
earlier frame that has done k steps. Each frame the batcher encodes the new picture, noises it
to the first timestep with the stream's fixed noise, and runs the UNet once on the whole batch
[new frame at step 0, in-flight frames at steps 1 … steps−1]; the frame at the last step comes
out clean and is decoded, the others move one slot on. So one UNet call per frame, whatever
the step count, and the output of input i leaves with input i + `steps − 1`: the stated delay.

Start-up: the first frame primes the batch by running its first `steps − 1` steps one at a
time, so the first output is that frame fully denoised — never an empty or noise-brown frame.
Outputs 0 … steps−1 all show input 0; from then on output i shows input i − (steps − 1).

The noise is fixed per stream (from `seed`, optionally blended with `seed2`), which keeps the
picture steady from frame to frame. A parameter change other than the prompt (steps, strength,
seed, size, the kind of `controlnet`) takes effect at the next frame boundary and re-primes; the
last output is kept for reuse meanwhile. Prompts swap through `prompts.Conditioning` and
`controlnet_scale` is read every frame, both without re-priming.

With a ControlNet (`params.controlnet`), each in-flight slot keeps the condition picture of the
frame it holds (`inflight_control`), so every step of a frame follows that frame's structure.

The denoiser reaches the `DenoisingBatcher` that runs it through the `Batcher` protocol below,
so this module does not import the batcher (which imports it to open denoisers).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
import torch

from livegen.diffusion.prompts import Conditioning, PromptBank, PromptRequest
from livegen.diffusion.schedule import NoiseSchedule, StepCoefficients, stream_timesteps
from livegen.diffusion.similarity import SimilarityFilter
from livegen.effects.generation import GenerationParams
from livegen.media.convert import rgb_to_tensor

LATENT_SCALE = 8  # pixels per latent pixel in Stable Diffusion autoencoders
FIRST_PROMPT_WAIT_S = 0.05
"""How long a stream's very first frame waits for its prompt (a GPU encodes one in a few ms);
after that the frame gets no output and the prompt lands on a later frame."""


def working_size(frame_width: int, frame_height: int, long_side: int) -> tuple[int, int]:
    """(width, height) the model works at: long side `long_side`, the frame's aspect, multiples of 8."""
    scale = long_side / max(frame_width, frame_height)

    def snap(value: float) -> int:
        return max(4 * LATENT_SCALE, math.floor(value / LATENT_SCALE + 0.5) * LATENT_SCALE)

    return snap(frame_width * scale), snap(frame_height * scale)


def seeded_noise(
    seed: int, shape: tuple[int, ...], seed2: int | None = None, weight: float = 0.0
) -> torch.Tensor:
    """Unit Gaussian noise of `shape` from `seed` (on the CPU, so every device sees the same),
    blended with `seed2`'s by `weight` and rescaled to keep unit variance."""
    first = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
    if seed2 is None or weight == 0.0:
        return first
    second = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed2))
    return ((1.0 - weight) * first + weight * second) / ((1.0 - weight) ** 2 + weight**2) ** 0.5


@dataclass
class Ticket:
    """A frame handed to the batcher; `output` is set when the batcher has processed it."""

    denoiser: StreamDenoiser
    image: torch.Tensor | None  # (3, h, w) in [0, 1] at the working size, on the device
    output: torch.Tensor | None = None
    done: bool = False
    skipped: bool = False
    notes: set[str] = field(default_factory=set)
    picture: np.ndarray | None = None
    """The same picture as (h, w, 3) uint8 on the host, where a CPU node makes its canny edges."""
    control: torch.Tensor | None = None
    """(3, h, w) condition picture for the stream's ControlNet, set by the batcher."""


class Batcher(Protocol):
    """What a denoiser needs of the `batcher.DenoisingBatcher` that runs it."""

    device: torch.device
    dtype: torch.dtype
    latent_channels: int
    schedule: NoiseSchedule
    prompts: PromptBank

    def submit(self, denoiser: StreamDenoiser, image: torch.Tensor, picture: np.ndarray | None = None) -> Ticket: ...

    def collect(self, ticket: Ticket) -> torch.Tensor | None: ...

    def forget(self, denoiser: StreamDenoiser) -> None: ...


class StreamDenoiser:
    """What the batcher keeps for one stream between frames. Used on the worker thread, except
    `update()`, which any thread may call."""

    def __init__(self, batcher: Batcher, params: GenerationParams, prompt: str):
        self.batcher = batcher
        self.params = params
        self.prompt = prompt
        self.conditioning = Conditioning(batcher.prompts, self._prompt_request(prompt, params))
        self._next_params: GenerationParams | None = None
        self._lock = threading.Lock()
        self.filter = SimilarityFilter(params.similarity, params.max_skip)
        self.size: tuple[int, int] | None = None
        self.coefficients: StepCoefficients | None = None
        self.noise: torch.Tensor | None = None  # (steps, C, h, w)
        self.inflight: torch.Tensor | None = None  # (steps − 1, C, h, w): slot k + 1 at row k
        self.inflight_control: torch.Tensor | None = None  # (steps − 1, 3, h, w): their condition pictures
        self.last_latent: torch.Tensor | None = None  # (1, C, h, w), the last clean output latent
        self.last_output: torch.Tensor | None = None  # (3, h, w) in [0, 1]
        self.frames_in = 0
        self.frames_denoised = 0
        self.frames_skipped = 0
        self.primes = 0

    @staticmethod
    def _prompt_request(prompt: str, params: GenerationParams) -> PromptRequest:
        return PromptRequest(prompt, params.prompt2, params.prompt_weight)

    @property
    def control_kind(self) -> str | None:
        """What the stream's ControlNet follows ("canny", "depth"), or None."""
        return None if self.params.controlnet == "none" else self.params.controlnet

    @property
    def delay_frames(self) -> int:
        """Frames between an input and the output that shows it (once primed)."""
        return self.params.steps - 1

    def update(self, prompt: str | None = None, params: GenerationParams | None = None) -> None:
        """Change the prompt and/or parameters; both land at a frame boundary, the prompt once encoded."""
        new = params or self.params
        request = self._prompt_request(prompt if prompt is not None else self.prompt, new)
        if request != self._prompt_request(self.prompt, self.params):
            self.conditioning.request(request)
            self.prompt = request.prompt
        if params is not None:
            with self._lock:
                self._next_params = params

    def take_params(self) -> GenerationParams:
        """The parameters from the last `update`, in force from now on (the scene mode's still
        asks before each picture; a video frame in `begin_frame`)."""
        with self._lock:
            params, self._next_params = self._next_params, None
        if params is not None:
            geometry = ("steps", "strength", "seed", "seed2", "seed_weight", "size", "controlnet")
            if any(getattr(params, k) != getattr(self.params, k) for k in geometry):
                self.size = None  # re-derive noise and coefficients, re-prime
            self.params = params
            self.filter = SimilarityFilter(params.similarity, params.max_skip)
        return self.params

    def begin_frame(self, frame_size: tuple[int, int]) -> None:
        self.take_params()
        size = working_size(*frame_size, self.params.size)
        if size != self.size:
            self._reset(size)

    def _reset(self, size: tuple[int, int]) -> None:
        p, batcher = self.params, self.batcher
        self.size = size
        timesteps = stream_timesteps(p.strength, p.steps, batcher.schedule.train_steps)
        self.coefficients = batcher.schedule.coefficients(timesteps, batcher.device, batcher.dtype)
        shape = (p.steps, batcher.latent_channels, size[1] // LATENT_SCALE, size[0] // LATENT_SCALE)
        self.noise = seeded_noise(p.seed, shape, p.seed2, p.seed_weight).to(batcher.device, batcher.dtype)
        self.inflight = self.inflight_control = None
        self.last_latent = None
        self.filter.reset()

    def shrink(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 → (h, w, 3) uint8 at the working size, on the host."""
        width, height = self.size  # type: ignore[misc]
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)

    def prepare_input(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 → (3, h, w) float in [0, 1] at the working size on the device. The
        picture shrinks on the host first, so only the small one crosses to the GPU."""
        return rgb_to_tensor(self.shrink(rgb), self.batcher.device, self.batcher.dtype)

    def submit(self, rgb: np.ndarray, *, reuse: bool = False) -> Ticket:
        """Hand the frame `rgb` to the batcher; `Ticket.output` after `batcher.collect(ticket)`.
        `reuse` (e.g. the stream is over budget) returns the last output without any model work."""
        if self.frames_in == 0:
            self.conditioning.wait(FIRST_PROMPT_WAIT_S)
        self.frames_in += 1
        height, width = rgb.shape[:2]
        self.begin_frame((width, height))
        if self.last_output is None:
            self.filter.remember(rgb)
        elif reuse or self.filter.skip(rgb):
            self.frames_skipped += 1
            notes = {"diffusion_reused" if reuse else "diffusion_similar"}
            return Ticket(self, None, self.last_output, done=True, skipped=True, notes=notes)
        small = self.shrink(rgb)
        return self.batcher.submit(self, rgb_to_tensor(small, self.batcher.device, self.batcher.dtype), small)

    def process(self, rgb: np.ndarray, *, reuse: bool = False) -> torch.Tensor | None:
        """One frame through the denoiser on its own: (3, h, w) in [0, 1], or None before the
        prompt's first embeddings are ready."""
        return self.batcher.collect(self.submit(rgb, reuse=reuse))

    def close(self) -> None:
        self.batcher.forget(self)
        self.inflight = self.inflight_control = self.noise = self.last_latent = self.last_output = None
