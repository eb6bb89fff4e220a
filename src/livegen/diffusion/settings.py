"""The `diffusion` settings section: which model the node loads and how it runs it.

Kept free of torch and diffusers so that config.py can use it without loading them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DiffusionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """False: no generator is built; `generated` backgrounds and `stylize` fall back."""
    model: str = "stabilityai/sd-turbo"
    """A local folder in diffusers layout (unet/, text_encoder/, tokenizer/, scheduler/) or a
    Hugging Face id already in the local cache (`livegen models pull ID` puts it there)."""
    taesd: str | None = "madebyollin/taesd"
    """The tiny autoencoder (folder or cached id) used to encode and decode frames; ignored when
    the model folder's own vae/ already is an `AutoencoderTiny`."""
    cache_dir: Path | None = None
    """Hugging Face cache to look in; default: the hub's own (HF_HUB_CACHE / HF_HOME)."""
    allow_cpu: bool = False
    """Run on the CPU when there is no GPU (fp32, far below frame rate: tests and demos only)."""
    compile: bool = False
    """torch.compile the UNet (opt-in: minutes of compiling at start; falls back to eager)."""
    cuda_graphs: bool = False
    """Replay the UNet as a CUDA graph per batch shape (opt-in; falls back when capture fails)."""
    channels_last: bool = True
    """channels-last memory format on CUDA (usually faster convolutions)."""
    prompt_cache: int = Field(64, ge=1, le=4096)
    """Prompt embeddings kept in memory; a prompt seen before swaps in without encoding."""
    max_batch: int = Field(8, ge=1, le=64)
    """Most frames (streams × steps) one UNet call may carry; larger groups are split."""
