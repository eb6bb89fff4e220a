"""The diffusion stage: prompt-conditioned background generation and stylization.

Built from diffusers components (a `UNet2DConditionModel` of the sd-turbo / SD 2.1 or SD 1.5 +
LCM class, TAESD as `AutoencoderTiny`, the CLIP text encoder) driven by livegen's own few-step
img2img loop with a StreamDiffusion-style denoising batch. It implements the effects'
`SceneGenerator` protocol (effects.base) and takes its parameters from `effects.generation`;
the effects never import it. Its settings are `config.DiffusionSettings`. Modules, in the order
a frame meets them:

- `generator`: `DiffusionGenerator`, the node's `SceneGenerator` (generated backgrounds and the
  `stylize` effect ask it for scenes).
- `models`: finding a model (and its ControlNets, depth estimator) in a local folder or the
  Hugging Face cache, offline; loading it.
- `schedule`: few-step timesteps from a numeric strength, and the per-step coefficients.
- `prompts`: prompt embeddings cached and encoded off the frame path, swapped in atomically.
- `similarity`: skipping frames that are nearly the same as the last one processed.
- `denoiser`: `StreamDenoiser`, one stream's denoising batch (fixed seeded noise, in-flight
  latents).
- `structure`: the condition pictures a ControlNet follows (canny edges on the host or the
  device, depth from a depth estimator).
- `batcher`: `DenoisingBatcher`, the models on a device; one UNet call for every stream with a
  frame ready, ControlNets included.
- `unet`: that UNet call with its ControlNets, and its CUDA-graph replays.
- `tiny`: random-weight models of the real classes (tests, the CPU bench, the GPU bench).
- `tools`: `livegen models pull` and the `livegen doctor` lines.

Heavy imports (diffusers, transformers) happen only when a model is loaded or built.
"""
