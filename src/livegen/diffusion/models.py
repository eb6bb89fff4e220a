"""Finding and loading the diffusion models, offline.

A model is named by a local folder in diffusers layout or by a Hugging Face id that is already
in the local cache; nothing is ever downloaded here (every lookup passes `local_files_only`).
The folder holds

    unet/          UNet2DConditionModel (config.json + weights)
    text_encoder/  CLIPTextModel
    tokenizer/     CLIPTokenizer (vocab.json + merges.txt, or tokenizer.json)
    scheduler/     scheduler_config.json (EulerDiscrete for turbo models, LCMScheduler for LCM)
    vae/           optional; used only when it is an AutoencoderTiny

and the tiny autoencoder comes from that vae/ or from its own folder (`diffusion.taesd`, e.g.
madebyollin/taesd). Whatever is missing raises `MissingModel`, whose message names what to put
where; the generator turns it into its `unavailable()` reason.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from livegen.errors import LivegenError

log = logging.getLogger(__name__)

COMPONENTS = ("unet", "text_encoder", "tokenizer", "scheduler")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
LAYOUT = (
    "a diffusers-layout folder with unet/, text_encoder/, tokenizer/ and scheduler/ (and vae/ only if it "
    "is an AutoencoderTiny)"
)


class MissingModel(LivegenError):
    """A model or one of its parts is not on this machine (or cannot be loaded)."""

    status = 503
    title = "Model not available"


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: `model` and `taesd` are each a folder or a cached Hugging Face id."""

    model: str
    taesd: str | None = "madebyollin/taesd"
    cache_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> ModelSpec:
        return cls(settings.model, settings.taesd, settings.cache_dir)


@dataclass(frozen=True)
class ModelFolders:
    """Where each part of a model was found."""

    root: Path
    taesd: Path
    taesd_inside: bool
    """Whether the tiny autoencoder is the model folder's own vae/."""

    def sizes(self) -> dict[str, int]:
        """Bytes on disk per part (weights and configs; links into the hub cache followed)."""
        parts = {name: self.root / name for name in COMPONENTS}
        parts["taesd"] = self.taesd
        return {name: folder_bytes(path) for name, path in parts.items()}


@dataclass
class DiffusionModels:
    """The loaded parts of one model, on one device."""

    name: str
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    folders: ModelFolders | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """`lcm` for latent consistency models (their own step rule), else `turbo`."""
        return "lcm" if self.scheduler_config.get("_class_name") == "LCMScheduler" else "turbo"

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def embedding_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)


def folder_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def hub_cache(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _looks_like_repo_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "~")) and os.sep not in ref.replace("/", "")


def resolve(ref: str, cache_dir: Path | None, what: str) -> Path:
    """The local folder behind `ref` (a folder, or a cached Hugging Face id), never downloading."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if _looks_like_repo_id(ref):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(ref, cache_dir=cache_dir, local_files_only=True))
        except Exception as exc:  # LocalEntryNotFoundError and friends: not in the cache
            raise MissingModel(
                f"{what} {ref!r} is not in the Hugging Face cache ({hub_cache(cache_dir)}) and is not a folder: "
                f"run `livegen models pull {ref}` on a machine with internet, or point the setting at "
                f"{LAYOUT if what == 'diffusion model' else 'a folder holding an AutoencoderTiny (config.json + weights)'}"
                f" ({type(exc).__name__})"
            ) from None
    raise MissingModel(f"{what} folder {ref!r} does not exist; expected {LAYOUT}")


def _config(folder: Path, name: str = "config.json") -> dict[str, Any]:
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir())


def locate(spec: ModelSpec) -> ModelFolders:
    """Check every part of `spec` is on disk; `MissingModel` names the first one that is not."""
    root = resolve(spec.model, spec.cache_dir, "diffusion model")
    missing = []
    for name in ("unet", "text_encoder"):
        if not (root / name / "config.json").is_file() or not _has_weights(root / name):
            missing.append(f"{name}/ (config.json + weights)")
    tokenizer = root / "tokenizer"
    if not ((tokenizer / "vocab.json").is_file() and (tokenizer / "merges.txt").is_file()) and not (
        tokenizer / "tokenizer.json"
    ).is_file():
        missing.append("tokenizer/ (vocab.json + merges.txt or tokenizer.json)")
    if not (root / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    if missing:
        raise MissingModel(f"diffusion model folder {root} lacks {', '.join(missing)}; expected {LAYOUT}")
    vae = root / "vae"
    if _config(vae).get("_class_name") == "AutoencoderTiny" and _has_weights(vae):
        return ModelFolders(root, vae, True)
    if spec.taesd is None:
        raise MissingModel(
            f"diffusion model folder {root} has no AutoencoderTiny in vae/ and diffusion.taesd is not set: "
            "set it to a TAESD folder or cached id (madebyollin/taesd for SD 1.x / 2.x)"
        )
    taesd = resolve(spec.taesd, spec.cache_dir, "tiny autoencoder (TAESD)")
    if _config(taesd).get("_class_name") != "AutoencoderTiny" or not _has_weights(taesd):
        raise MissingModel(
            f"{taesd} is not an AutoencoderTiny folder (config.json with _class_name AutoencoderTiny + weights)"
        )
    return ModelFolders(root, taesd, False)


def _variant(folder: Path, stem: str) -> str | None:
    """`fp16` when only the half-precision weights are there (how many hub snapshots are pulled)."""
    names = {p.name for p in folder.iterdir()}
    plain = any(n.startswith(stem + ".") and n.count(".") == 1 for n in names)
    if not plain and any(n.startswith(stem + ".fp16.") for n in names):
        return "fp16"
    return None


def load(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> DiffusionModels:
    """Load every part of `spec` onto `device` in `dtype`, in eval mode; `MissingModel` on failure."""
    folders = locate(spec)
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        unet = UNet2DConditionModel.from_pretrained(
            folders.root / "unet", local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False,
            variant=_variant(folders.root / "unet", "diffusion_pytorch_model"),
        )
        vae = AutoencoderTiny.from_pretrained(
            folders.taesd, local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False,
            variant=_variant(folders.taesd, "diffusion_pytorch_model"),
        )
        text_encoder = CLIPTextModel.from_pretrained(
            folders.root / "text_encoder", local_files_only=True, dtype=dtype,
            variant=_variant(folders.root / "text_encoder", "model"),
        )
        tokenizer = CLIPTokenizer.from_pretrained(folders.root / "tokenizer", local_files_only=True)
    except Exception as exc:
        raise MissingModel(f"loading the diffusion model from {folders.root} failed: {type(exc).__name__}: {exc}") from exc
    scheduler_config = _config(folders.root / "scheduler", "scheduler_config.json")
    models = DiffusionModels(spec.model, unet, vae, text_encoder, tokenizer, scheduler_config, folders)
    if vae.config.latent_channels != unet.config.in_channels:
        raise MissingModel(
            f"TAESD in {folders.taesd} makes {vae.config.latent_channels}-channel latents but the UNet takes "
            f"{unet.config.in_channels}: use the TAESD that matches the model family"
        )
    if text_encoder.config.hidden_size != unet.config.cross_attention_dim:
        raise MissingModel(
            f"the text encoder's width ({text_encoder.config.hidden_size}) does not match the UNet's "
            f"cross_attention_dim ({unet.config.cross_attention_dim}) in {folders.root}"
        )
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    log.info("diffusion model %s loaded from %s (%s, TAESD %s)", spec.model, folders.root, models.kind, folders.taesd)
    return models
