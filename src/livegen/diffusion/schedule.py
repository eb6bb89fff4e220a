"""Few-step timesteps from a numeric strength, and the coefficients of one denoising step.

Turbo models (sd-turbo, trained with "trailing" spacing) and LCMs both denoise in one to four
steps. For `steps` steps at strength `s`, step k starts at timestep
`floor(T·s·(steps − k) / steps) − 1`: strength 1 with one step is timestep T − 1 (pure noise,
text-to-image), strength 0.5 with two steps is [499, 249] — the same timesteps diffusers'
img2img picks with trailing spacing for `steps / s` inference steps.

A step predicts the clean latent x̂₀ from the noisy one and re-noises it to the next step's
timestep with the stream's fixed noise. LCMs add their consistency boundary condition
(x̂₀ = c_skip·x + c_out·pred); turbo models take the prediction as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


def stream_timesteps(strength: float, steps: int, train_steps: int = 1000) -> list[int]:
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], not {strength}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    timesteps = [max(0, math.floor(train_steps * strength * (steps - k) / steps) - 1) for k in range(steps)]
    if len(set(timesteps)) != steps:
        raise ValueError(f"strength {strength} is too small for {steps} distinct steps")
    return timesteps


LCM_GUIDANCE_SCALE = 8.5
"""Classifier-free guidance an LCM-distilled UNet was trained to take as a condition (its
`time_cond_proj_dim`): the scale its own pipeline uses by default."""


def guidance_embedding(scale: float, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, dim) sinusoidal embedding of the guidance weight w = scale − 1 (times 1000, like a
    timestep), which LCM-distilled UNets take as `timestep_cond`."""
    # in float32 throughout, as the models were trained: the angles are large, so float64 differs
    half = dim // 2
    step = torch.log(torch.tensor(10000.0)) / max(half - 1, 1)
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    angles = torch.tensor((scale - 1.0) * 1000.0, dtype=torch.float32) * frequencies
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)])
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros(1)])
    return embedding.to(dtype)[None]


@dataclass(frozen=True)
class NoiseSchedule:
    """The training noise schedule of a model, from its scheduler config."""

    alphas_cumprod: torch.Tensor  # float64 on the CPU, one per training timestep
    prediction_type: str
    consistency: bool
    """LCM boundary conditions on each prediction."""
    timestep_scaling: float = 10.0
    sigma_data: float = 0.5

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        train = int(config.get("num_train_timesteps", 1000))
        start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
        kind = config.get("beta_schedule", "scaled_linear")
        if kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, train, dtype=torch.float64) ** 2
        elif kind == "linear":
            betas = torch.linspace(start, end, train, dtype=torch.float64)
        else:
            raise ValueError(f"beta_schedule {kind!r} is not supported (scaled_linear or linear)")
        prediction = config.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type {prediction!r} is not supported")
        return cls(
            torch.cumprod(1.0 - betas, dim=0),
            prediction,
            config.get("_class_name") == "LCMScheduler",
            float(config.get("timestep_scaling", 10.0)),
        )

    @property
    def train_steps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def coefficients(self, timesteps: list[int], device: torch.device, dtype: torch.dtype) -> StepCoefficients:
        a = self.alphas_cumprod[timesteps]
        scaled = torch.tensor(timesteps, dtype=torch.float64) * self.timestep_scaling
        if self.consistency:
            c_skip = self.sigma_data**2 / (scaled**2 + self.sigma_data**2)
            c_out = scaled / (scaled**2 + self.sigma_data**2) ** 0.5
        else:
            c_skip, c_out = torch.zeros_like(a), torch.ones_like(a)

        def column(values: torch.Tensor) -> torch.Tensor:
            return values.view(-1, 1, 1, 1).to(device=device, dtype=dtype)

        return StepCoefficients(
            torch.tensor(timesteps, device=device, dtype=torch.long),
            column(a.sqrt()), column((1.0 - a).sqrt()), column(c_skip), column(c_out), self.prediction_type,
        )


@dataclass(frozen=True)
class StepCoefficients:
    """Per-step columns (steps, 1, 1, 1) for a batch whose slot k is at step k."""

    timesteps: torch.Tensor
    sqrt_alpha: torch.Tensor
    sqrt_one_minus_alpha: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    prediction_type: str

    def clean(self, noisy: torch.Tensor, output: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """x̂₀ of each row of `noisy` from the UNet's `output` (rows: which steps they are at)."""
        rows = rows or slice(None)
        sa, s1a = self.sqrt_alpha[rows], self.sqrt_one_minus_alpha[rows]
        if self.prediction_type == "epsilon":
            x0 = (noisy - s1a * output) / sa
        elif self.prediction_type == "v_prediction":
            x0 = sa * noisy - s1a * output
        else:
            x0 = output
        return self.c_skip[rows] * noisy + self.c_out[rows] * x0

    def noised(self, clean: torch.Tensor, noise: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """`clean` latents brought to the timesteps of `rows` with `noise`."""
        rows = rows or slice(None)
        return self.sqrt_alpha[rows] * clean + self.sqrt_one_minus_alpha[rows] * noise
