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

Structure control is optional and loads beside the model: a `ControlNetModel` per kind of
condition (`diffusion.controlnet` for canny edges, `diffusion.controlnet_depth` for depth), each a
folder with config.json + weights or a cached id (e.g. thibaud/controlnet-sd21-canny-diffusers
for sd-turbo / SD 2.1), and for depth a transformers depth estimator (`diffusion.depth_model`,
e.g. Intel/dpt-hybrid-midas). A control part that is missing or does not fit the UNet leaves the
model running without it: its reason lands in `DiffusionModels.control_missing`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livegen.errors import LivegenError

if TYPE_CHECKING:  # only in annotations: `livegen models` and the CLI's parser stay light
    import torch

log = logging.getLogger(__name__)

COMPONENTS = ("unet", "text_encoder", "tokenizer", "scheduler")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
LAYOUT = (
    "a diffusers-layout folder with unet/, text_encoder/, tokenizer/ and scheduler/ (and vae/ only if it "
    "is an AutoencoderTiny)"
)

TAESD_LAYOUT = "a folder holding an AutoencoderTiny (config.json + weights)"
CONTROLNET_LAYOUT = "a folder holding a ControlNetModel (config.json with _class_name ControlNetModel + weights)"
DEPTH_LAYOUT = "a folder holding a transformers depth-estimation model (config.json + weights)"


class MissingModel(LivegenError):
    """A model or one of its parts is not on this machine (or cannot be loaded)."""

    status = 503
    title = "Model not available"


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: `model`, `taesd` and the control parts are each a folder or a cached
    Hugging Face id."""

    model: str
    taesd: str | None = "madebyollin/taesd"
    cache_dir: Path | None = None
    controlnet: str | None = None
    """The ControlNetModel that follows canny edges (`controlnet: canny`)."""
    controlnet_depth: str | None = None
    """The ControlNetModel that follows depth (`controlnet: depth`)."""
    depth_model: str | None = None
    """The transformers depth estimator that makes depth pictures for `controlnet_depth`."""

    @classmethod
    def from_settings(cls, settings: Any) -> ModelSpec:
        # the control settings are optional in a settings object (config.DiffusionSettings has them)
        return cls(settings.model, settings.taesd, settings.cache_dir, settings.controlnet,
                   settings.controlnet_depth, settings.depth_model)

    def controlnet_for(self, kind: str) -> str | None:
        """The ControlNet folder / id for a kind of condition (see structure.CONTROL_KINDS)."""
        return {"canny": self.controlnet, "depth": self.controlnet_depth}.get(kind)


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
    controlnets: dict[str, Any] = field(default_factory=dict)
    """ControlNetModels by the kind of condition they follow ("canny", "depth")."""
    depth: Any | None = None
    """The depth estimator (a `structure.DepthEstimator`) for the depth ControlNet."""
    control_missing: dict[str, str] = field(default_factory=dict)
    """Why a configured kind of control did not load (the model runs without it)."""

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


def resolve(ref: str, cache_dir: Path | None, what: str, expected: str = LAYOUT) -> Path:
    """The local folder behind `ref` (a folder, or a cached Hugging Face id), never downloading;
    `MissingModel` says what `what` should be (`expected`)."""
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
                f"{expected} ({type(exc).__name__})"
            ) from None
    raise MissingModel(f"{what} folder {ref!r} does not exist; expected {expected}")


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
    taesd = resolve(spec.taesd, spec.cache_dir, "tiny autoencoder (TAESD)", TAESD_LAYOUT)
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
    load_controls(models, spec, device, dtype)
    return models


# ---- structure control ----------------------------------------------------------------------
CONTROL_SETTINGS = {"canny": "diffusion.controlnet", "depth": "diffusion.controlnet_depth"}
"""The setting that names each kind's ControlNet."""
CONTROLNET_FIT = ("in_channels", "block_out_channels", "layers_per_block", "down_block_types", "cross_attention_dim")
"""What a ControlNet must share with the UNet: its residuals are added to the UNet's blocks."""


def locate_controlnet(ref: str, cache_dir: Path | None, setting: str = "diffusion.controlnet") -> Path:
    """The folder of the ControlNet `ref`; `MissingModel` names `setting` when it is not one."""
    folder = resolve(ref, cache_dir, f"ControlNet ({setting})", CONTROLNET_LAYOUT)
    if _config(folder).get("_class_name") != "ControlNetModel" or not _has_weights(folder):
        raise MissingModel(f"{folder} ({setting}) is not a ControlNet: expected {CONTROLNET_LAYOUT}")
    return folder


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def load_controlnet(ref: str, unet: Any, device: torch.device, dtype: torch.dtype, *, cache_dir: Path | None = None,
                    setting: str = "diffusion.controlnet") -> Any:
    """The `ControlNetModel` `ref` on `device` in `dtype`, checked to fit `unet`."""
    folder = locate_controlnet(ref, cache_dir, setting)
    from diffusers import ControlNetModel

    try:
        controlnet = ControlNetModel.from_pretrained(
            folder, local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False,
            variant=_variant(folder, "diffusion_pytorch_model"),
        )
    except Exception as exc:
        raise MissingModel(f"loading the ControlNet ({setting}) from {folder} failed: {type(exc).__name__}: {exc}") from exc
    mismatch = [
        f"{key} {_plain(controlnet.config.get(key))} vs {_plain(unet.config.get(key))}"
        for key in CONTROLNET_FIT
        if _plain(controlnet.config.get(key)) != _plain(unet.config.get(key))
    ]
    if mismatch:
        raise MissingModel(
            f"the ControlNet in {folder} ({setting}) does not fit the diffusion model's UNet ({'; '.join(mismatch)}): "
            "use a ControlNet trained for the model's family (SD 2.1 for sd-turbo, SD 1.5 for SD 1.5 + LCM)"
        )
    return controlnet.to(device).eval().requires_grad_(False)


def load_depth_model(ref: str, device: torch.device, dtype: torch.dtype, *, cache_dir: Path | None = None) -> Any:
    """The depth estimator `ref` (a transformers depth-estimation model) as a `structure.DepthEstimator`."""
    from livegen.diffusion.structure import DepthEstimator

    folder = resolve(ref, cache_dir, "depth model (diffusion.depth_model)", DEPTH_LAYOUT)
    if not (folder / "config.json").is_file() or not _has_weights(folder):
        raise MissingModel(f"{folder} (diffusion.depth_model) lacks config.json or weights: expected {DEPTH_LAYOUT}")
    from transformers import AutoModelForDepthEstimation

    try:
        model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True, dtype=dtype)
    except Exception as exc:
        raise MissingModel(f"loading the depth model (diffusion.depth_model) from {folder} failed: "
                           f"{type(exc).__name__}: {exc}") from exc
    pre = _config(folder, "preprocessor_config.json")
    size = pre.get("size") if isinstance(pre.get("size"), dict) else {}
    height = int(size.get("height", 384))
    width = int(size.get("width", height))
    mean = tuple(float(v) for v in pre.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in pre.get("image_std", (0.5, 0.5, 0.5)))
    return DepthEstimator(model, (height, width), mean, std).to(device, dtype)


def load_controls(models: DiffusionModels, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
    """Load the control parts `spec` names into `models`; one that cannot load is a reason in
    `models.control_missing`, and the model runs without it."""
    from livegen.diffusion.structure import CONTROL_KINDS

    for kind in CONTROL_KINDS:
        ref = spec.controlnet_for(kind)
        if ref is None:
            continue
        setting = CONTROL_SETTINGS[kind]
        try:
            controlnet = load_controlnet(ref, models.unet, device, dtype, cache_dir=spec.cache_dir, setting=setting)
            if kind == "depth":
                if spec.depth_model is None:
                    raise MissingModel(
                        "diffusion.controlnet_depth is set but diffusion.depth_model is not: depth pictures need a "
                        "depth estimator (a transformers depth model, e.g. Intel/dpt-hybrid-midas)"
                    )
                models.depth = load_depth_model(spec.depth_model, device, dtype, cache_dir=spec.cache_dir)
        except MissingModel as exc:
            log.warning("diffusion: %s control off: %s", kind, exc.detail)
            models.control_missing[kind] = exc.detail
            continue
        models.controlnets[kind] = controlnet
        log.info("diffusion: %s control from %s", kind, ref)
