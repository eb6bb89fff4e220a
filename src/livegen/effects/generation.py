"""What an effect may ask of the node's scene generator (the diffusion stage), validated here,
before any device work.

`GenerationParams` are shared by the `generated` background (as `SceneParams`, through
`SceneGenerator.scene`) and the `stylize` effect, so both speak the same parameter names. They
live with the effects, which check them; the diffusion stage implements what they describe.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from livegen.effects.base import EffectParams


class GenerationParams(EffectParams):
    prompt2: str | None = Field(None, max_length=1000)
    """A second prompt blended with the first by `prompt_weight` (0: only the first)."""
    prompt_weight: float = Field(0.0, ge=0.0, le=1.0)
    strength: float = Field(0.5, gt=0.0, le=1.0)
    """How far each frame is pushed from the camera picture: 1.0 ignores it, small values keep
    its layout. Mapped to the model's timesteps by `diffusion.schedule.stream_timesteps`."""
    steps: int = Field(2, ge=1, le=4)
    """Denoising steps per frame; the output comes `steps - 1` frames after its input."""
    seed: int = Field(0, ge=0, le=2**31 - 1)
    seed2: int | None = Field(None, ge=0, le=2**31 - 1)
    """A second noise seed blended with `seed` by `seed_weight`."""
    seed_weight: float = Field(0.0, ge=0.0, le=1.0)
    size: int = Field(512, ge=64, le=1024)
    """Long side of the picture the model works on, in pixels; the short side follows the
    frame's aspect. Both are rounded to multiples of 8 (one latent pixel)."""
    feedback: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of the previous output latent mixed into each new frame's latent (steadier, laggier)."""
    smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of the previous output latent kept in each new one (an EMA against flicker)."""
    similarity: float = Field(0.98, ge=0.0, le=1.0)
    """Frames at least this similar to the last processed one reuse its output; 1.0: never skip."""
    max_skip: int = Field(10, ge=0, le=1000)
    """At most this many frames in a row are skipped as similar."""
    controlnet: Literal["none", "canny", "depth"] = "none"
    """Structure control: a ControlNet keeps the camera picture's edges (`canny`) or depth
    (`depth`) in the generated one. Needs the node's ControlNet for that kind (the settings
    `diffusion.controlnet`, or `diffusion.controlnet_depth` and `diffusion.depth_model`); a
    node without it answers 422. Changing it re-primes the stream."""
    controlnet_scale: float = Field(0.8, ge=0.0, le=2.0)
    """How strongly the ControlNet steers (its residuals' weight); 0 is the same as no control.
    Read every frame: changing it does not re-prime."""

    @model_validator(mode="after")
    def _blends(self) -> GenerationParams:
        if self.prompt_weight > 0 and not self.prompt2:
            raise ValueError("prompt_weight > 0 needs prompt2")
        if self.seed_weight > 0 and self.seed2 is None:
            raise ValueError("seed_weight > 0 needs seed2")
        return self


class SceneParams(GenerationParams):
    """What `SceneGenerator.scene` is asked for (checked under the name `generated`)."""

    mode: Literal["background", "scene"] = "background"
    """background: img2img on every camera frame; scene: one still per prompt, reused."""

    @model_validator(mode="after")
    def _control_needs_frames(self) -> SceneParams:
        if self.mode == "scene" and self.controlnet != "none":
            raise ValueError("controlnet needs mode background (a scene is made from noise, with no camera picture "
                             "whose structure it could keep)")
        return self
