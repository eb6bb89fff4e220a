"""`SceneFrames`: the effect a GenerateStream call runs on its job lane.

Each frame that reaches it is replaced by the next picture of a scene: the diffusion stage's
scene mode (text to image from noise at full strength, as a `generated` background in
`mode: scene` shows it), with the seed advancing by one per frame. It runs on the device worker
thread like every effect, so the UNet stays with the thread that owns the device. The stills are
not put in the generator's shared cache: a long call would push out the live streams' scenes.
"""

from __future__ import annotations

import numpy as np

from livegen.diffusion.denoiser import StreamDenoiser, working_size
from livegen.diffusion.generator import DiffusionGenerator, fit_to_frame
from livegen.effects.base import Effect, Frame
from livegen.effects.generation import SceneParams


class SceneUnavailable(RuntimeError):
    """The generator lost its models (the node is stopping) or the prompt has no embeddings."""


class SceneFrames(Effect):
    name = "generated"
    Params = SceneParams
    params: SceneParams

    def __init__(self, generator: DiffusionGenerator, denoiser: StreamDenoiser, params: SceneParams):
        super().__init__(params)
        self.generator = generator
        self.denoiser = denoiser
        """Holds the prompt's embeddings (encoded on the prompt thread); closed with the lane."""
        self.made = 0

    @property
    def next_seed(self) -> int:
        return self.params.seed + self.made

    def apply(self, frame: Frame) -> None:
        batcher = self.generator.batcher
        embeddings = self.denoiser.conditioning.current()
        if batcher is None or embeddings is None:
            raise SceneUnavailable(self.generator.unavailable() or "the prompt has not been encoded")
        params, seed = self.params, self.next_seed
        self.made += 1  # a lane runs its frames in order, one at a time: frame n gets seed + n
        still = batcher.generate_still(embeddings, working_size(*frame.size, params.size), params.steps, seed)
        picture = fit_to_frame(still, frame.size, frame.device)
        if isinstance(picture, np.ndarray):
            frame.rgb = picture
        else:
            frame.image = picture.to(frame.dtype)

    def close(self) -> None:
        self.denoiser.close()
