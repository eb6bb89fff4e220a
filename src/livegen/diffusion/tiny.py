"""Random-weight models of the real classes, built here and never downloaded.

`tiny` architectures are toy-sized (tests, `livegen bench diffusion --tiny` on a CPU); `sd-turbo`
and `sd15` copy the real architectures' hyperparameters, so a GPU bench measures real latency
with random weights (latency does not depend on weight values). `save_models` writes them in the
same diffusers layout a real model has, so tests go through the real loading code.

A ControlNet (`build_controlnet`) is the real `ControlNetModel`, made from the UNet's
architecture as diffusers does, with its zero-initialised output layers randomised too (else a
fresh ControlNet changes nothing); a depth estimator (`build_depth_model`) is a toy transformers
DPT. `build_folder(controlnet=True, depth=True)` writes them beside the model, where
`control_folders` finds them.

The tokenizer is a byte-level CLIP BPE with every single byte (plain and word-final) and a few
merges, written as vocab.json + merges.txt: it tokenizes any text, which is all a random-weight
model needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from livegen.diffusion.models import DiffusionModels

TURBO_SCHEDULER: dict[str, Any] = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "timestep_spacing": "trailing",
}
LCM_SCHEDULER: dict[str, Any] = {
    **TURBO_SCHEDULER,
    "_class_name": "LCMScheduler",
    "timestep_spacing": "leading",
    "original_inference_steps": 50,
    "timestep_scaling": 10.0,
}

_SD_BLOCKS: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "act_fn": "silu",
}
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # SD 2.1-base / sd-turbo: OpenCLIP ViT-H text tower (1024 wide, 23 layers used), linear projections
    "sd-turbo": {
        "unet": {**_SD_BLOCKS, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
                 "use_linear_projection": True},
        "text": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                 "num_hidden_layers": 23, "projection_dim": 512, "hidden_act": "gelu"},
        "scheduler": TURBO_SCHEDULER,
    },
    # SD 1.5 (+ LCM): CLIP ViT-L/14 text tower, convolutional projections
    "sd15-lcm": {
        "unet": {**_SD_BLOCKS, "cross_attention_dim": 768, "attention_head_dim": 8, "use_linear_projection": False,
                 "time_cond_proj_dim": 256},  # LCM-distilled: guidance comes in as a condition
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                 "num_hidden_layers": 12, "projection_dim": 768, "hidden_act": "quick_gelu"},
        "scheduler": LCM_SCHEDULER,
    },
    "tiny": {
        "unet": {
            "sample_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": (32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "norm_num_groups": 32,
            "cross_attention_dim": 32,
            "attention_head_dim": (2, 4),
            "use_linear_projection": True,
        },
        "text": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                 "num_hidden_layers": 2, "projection_dim": 32, "hidden_act": "gelu"},
        "taesd": {"encoder_block_out_channels": (8, 8, 8, 8), "decoder_block_out_channels": (8, 8, 8, 8),
                  "num_encoder_blocks": (1, 1, 1, 1), "num_decoder_blocks": (1, 1, 1, 1)},
        "scheduler": TURBO_SCHEDULER,
    },
    "tiny-lcm": {},  # filled below: the tiny networks with the LCM step rule
}
ARCHITECTURES["tiny-lcm"] = {
    **ARCHITECTURES["tiny"],
    "unet": {**ARCHITECTURES["tiny"]["unet"], "time_cond_proj_dim": 32},
    "scheduler": LCM_SCHEDULER,
}
TEXT_MAX_LENGTH = 77


def _bytes_to_unicode() -> list[str]:
    """CLIP's printable stand-in for each byte, in byte order (so BPE never sees raw control bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            codes[byte] = byte
        else:
            codes[byte] = 256 + extra
            extra += 1
    return [chr(codes[byte]) for byte in range(256)]


def write_tokenizer(folder: Path) -> None:
    """vocab.json + merges.txt of a small byte-level CLIP BPE (with a few English merges)."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _bytes_to_unicode()
    tokens = [*alphabet, *(c + "</w>" for c in alphabet)]
    merges = ["t h", "th e</w>", "i n", "a n", "e r", "o n", "a t", "e n", "o r", "s t"]
    for merge in merges:
        joined = merge.replace(" ", "")
        if joined not in tokens:
            tokens.append(joined)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": TEXT_MAX_LENGTH}), encoding="utf-8"
    )


def build_models(architecture: str = "tiny", seed: int = 0, tokenizer_dir: Path | None = None) -> DiffusionModels:
    """Random-weight models of `architecture` (see ARCHITECTURES), on the CPU in fp32.

    A tokenizer needs files: it is written to `tokenizer_dir` (a temporary folder by default)."""
    import tempfile

    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} (known: {', '.join(ARCHITECTURES)})")
    arch = ARCHITECTURES[architecture]
    if tokenizer_dir is None:
        tokenizer_dir = Path(tempfile.mkdtemp(prefix="livegen-tokenizer-"))
    write_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**arch["unet"])
    vae = AutoencoderTiny(**arch.get("taesd", {}))
    text_config = CLIPTextConfig(
        vocab_size=max(len(tokenizer), 49408 if architecture.startswith("sd") else 0),
        max_position_embeddings=TEXT_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **arch["text"],
    )
    text_encoder = CLIPTextModel(text_config)
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return DiffusionModels(f"random-{architecture}", unet, vae, text_encoder, tokenizer, dict(arch["scheduler"]))


def save_models(models: DiffusionModels, folder: Path, taesd_folder: Path | None = None) -> Path:
    """Write `models` in diffusers layout under `folder`; TAESD into vae/ or `taesd_folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    models.unet.save_pretrained(folder / "unet")
    models.text_encoder.save_pretrained(folder / "text_encoder")
    models.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(models.scheduler_config), encoding="utf-8")
    models.vae.save_pretrained(taesd_folder if taesd_folder is not None else folder / "vae")
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "livegen_random_weights": models.name}), encoding="utf-8"
    )
    return folder


def build_folder(folder: Path, architecture: str = "tiny", seed: int = 0, separate_taesd: bool = False,
                 controlnet: bool = False, depth: bool = False) -> Path:
    """A random-weight model saved to `folder` (TAESD in `folder`-taesd when `separate_taesd`);
    with `controlnet` a canny ControlNet of the UNet's architecture, with `depth` a depth
    ControlNet and a depth estimator, in the folders `control_folders(folder)` names."""
    models = build_models(architecture, seed, tokenizer_dir=folder / "tokenizer")
    save_models(models, folder, folder.parent / f"{folder.name}-taesd" if separate_taesd else None)
    places = control_folders(folder)
    if controlnet:
        build_controlnet(models.unet, seed + 1).save_pretrained(places["controlnet"])
    if depth:
        build_controlnet(models.unet, seed + 2).save_pretrained(places["controlnet_depth"])
        save_depth_model(build_depth_model(seed + 3), places["depth_model"])
    return folder


def control_folders(folder: Path) -> dict[str, Path]:
    """Where `build_folder` puts the control parts of the model in `folder`, by `ModelSpec` field."""
    return {name: folder.parent / f"{folder.name}-{name.replace('_', '-')}"
            for name in ("controlnet", "controlnet_depth", "depth_model")}


def build_controlnet(unet: Any, seed: int = 1, std: float = 0.1) -> Any:
    """A random-weight `ControlNetModel` that fits `unet` (diffusers' `from_unet`), its
    zero-initialised output convolutions drawn from N(0, `std`) so that it really steers."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    channels = unet.config.block_out_channels
    # the condition encoder shrinks the picture 8× (to the latent size) in four stages, as the
    # real one; a toy UNet gets toy widths
    embedding = (16, 32, 96, 256) if channels[0] >= 320 else (8, 16, 16, 16)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding,
                                           load_weights_from_unet=False)
    for block in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                  controlnet.controlnet_cond_embedding.conv_out):
        for parameter in block.parameters():
            torch.nn.init.normal_(parameter, std=std)
    return controlnet.eval().requires_grad_(False)


DEPTH_INPUT = 32
"""The toy depth estimator's square input size (pixels)."""


def build_depth_model(seed: int = 3) -> Any:
    """A toy transformers DPT depth estimator with random weights."""
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(seed)
    config = DPTConfig(image_size=DEPTH_INPUT, patch_size=8, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=32, backbone_out_indices=[0, 1],
                       neck_hidden_sizes=[8, 16], reassemble_factors=[2, 1], fusion_hidden_size=8,
                       head_in_index=-1, is_hybrid=False)
    model = DPTForDepthEstimation(config)
    # transformers' small initialisation makes a toy DPT predict a flat picture: He-initialise
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            torch.nn.init.normal_(module.weight, std=(2.0 / module.weight[0].numel()) ** 0.5)
    return model.eval().requires_grad_(False)


def save_depth_model(model: Any, folder: Path) -> Path:
    """`model` and the preprocessor_config.json the loader reads its input size from."""
    model.save_pretrained(folder)
    preprocessor = {"image_processor_type": "DPTImageProcessor", "size": {"height": DEPTH_INPUT, "width": DEPTH_INPUT},
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    return folder
