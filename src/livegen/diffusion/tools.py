"""The diffusion stage's command-line pieces: `livegen models pull ID` and `livegen doctor` lines.

`pull` is the one place livegen downloads a model, and only when a user asks for it: it fills
the Hugging Face cache with the parts the diffusion stage loads (configs, tokenizer,
half-precision weights where the repository has them), so a node configured with that id then
finds it offline. It takes a diffusion model (pipeline layout, pulled with its TAESD), a
ControlNet or a depth estimator (one model at the repository root, like TAESD) and says which
setting to point at it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from livegen.diffusion.models import (
    COMPONENTS,
    CONTROL_SETTINGS,
    DEPTH_LAYOUT,
    MissingModel,
    ModelSpec,
    folder_bytes,
    hub_cache,
    locate,
    locate_controlnet,
    resolve,
)

WANTED = (*[f"{name}/*.json" for name in COMPONENTS], "tokenizer/*.txt", "model_index.json", "*.json")


def _weight_patterns(files: list[str]) -> list[str]:
    """The weights to fetch: per part the diffusion stage loads, the fp16 safetensors when
    present, else the plain ones. Single-file checkpoints at the top and the full VAE (TAESD
    replaces it) stay behind: they are gigabytes the node never reads. A repository that is one
    model on its own (TAESD keeps its config and weights at the root) gets its root weights."""

    def preferred(candidates: list[str]) -> list[str]:
        return [f for f in candidates if ".fp16." in f] or candidates

    patterns = []
    for part in COMPONENTS:
        patterns += preferred(
            [f for f in files if f.startswith(part + "/") and f.count("/") == 1 and f.endswith(".safetensors")]
        )
    if "model_index.json" not in files and "config.json" in files:  # one model, not a pipeline
        root = [f for f in files if "/" not in f]
        patterns += preferred([f for f in root if f.endswith(".safetensors")]
                              or [f for f in root if f.endswith(".bin")])
    return patterns


def pull(model_id: str, cache_dir: Path | None = None, log=print) -> Path:
    """Download `model_id` into the Hugging Face cache (network!); its local folder."""
    from huggingface_hub import HfApi, snapshot_download

    files = HfApi().list_repo_files(model_id)
    patterns = [*WANTED, *_weight_patterns(files)]
    log(f"pulling {model_id} into {hub_cache(cache_dir)} ({len(patterns)} patterns)")
    return Path(snapshot_download(model_id, cache_dir=cache_dir, allow_patterns=patterns))


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    """`livegen models pull ID [--cache-dir DIR] [--taesd ID]`."""
    commands = parser.add_subparsers(dest="models_command", required=True, metavar="command")
    pull_parser = commands.add_parser(
        "pull", help="download a diffusion model, a ControlNet or a depth model into the Hugging Face cache"
    )
    pull_parser.add_argument("model_id", help="Hugging Face id, e.g. stabilityai/sd-turbo or "
                                              "thibaud/controlnet-sd21-canny-diffusers")
    pull_parser.add_argument("--taesd", default="madebyollin/taesd",
                             help="tiny autoencoder to pull with a diffusion model ('' for none)")
    pull_parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default: the hub's)")


def _setting_for(model_id: str, folder: Path) -> str | None:
    """Which setting names `model_id`, pulled into `folder`, when it is a single model: a
    ControlNet (for canny, unless its id says depth) or a depth estimator; None for a diffusion
    model (a pipeline)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if config.get("_class_name") == "ControlNetModel":
        return "diffusion.controlnet_depth" if "depth" in model_id.lower() else "diffusion.controlnet"
    if any(name.endswith("ForDepthEstimation") for name in config.get("architectures") or ()):
        return "diffusion.depth_model"
    return None


def cmd_models(args: argparse.Namespace) -> int:
    if args.models_command != "pull":
        return 2
    try:
        folder = pull(args.model_id, args.cache_dir)
        print(f"{args.model_id}: {folder}")
        setting = _setting_for(args.model_id, folder)
        if setting in ("diffusion.controlnet", "diffusion.controlnet_depth"):
            locate_controlnet(str(folder), args.cache_dir, setting)
        elif setting is None:
            if args.taesd:
                print(f"{args.taesd}: {pull(args.taesd, args.cache_dir)}")
            locate(ModelSpec(args.model_id, args.taesd or None, args.cache_dir))
            setting = "diffusion.model"
    except MissingModel as exc:
        print(f"livegen models pull: downloaded, but the model is incomplete: {exc.detail}")
        return 1
    except Exception as exc:  # network, unknown repository, gated model …
        print(f"livegen models pull: {type(exc).__name__}: {exc}")
        return 1
    print(f"done: set {setting} to the id (the node finds it offline)")
    return 0


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def nvml_line() -> str:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return "not installed (pip install nvidia-ml-py for GPU utilisation and memory metrics)"
    try:
        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            count = pynvml.nvmlDeviceGetCount()
            names = []
            for index in range(count):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                names.append(f"{name.decode() if isinstance(name, bytes) else name} ({memory.total / 2**30:.0f} GiB)")
            driver = driver.decode() if isinstance(driver, bytes) else driver
            return f"driver {driver}: " + (", ".join(names) or "no GPUs")
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__}: {exc})"


def doctor_lines(settings: Any, generator: Any | None = None) -> list[str]:
    """`livegen doctor` lines for the diffusion stage; `settings` is the `diffusion` section."""
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    lines = [
        f"nvml        {nvml_line()}",
        f"diffusers   {version('diffusers')}, transformers {version('transformers')}",
        f"diffusion   {'enabled' if settings.enabled else 'disabled'}; model {settings.model}; "
        f"TAESD {settings.taesd or '(from the model vae/)'}; compile {settings.compile}, "
        f"CUDA graphs {settings.cuda_graphs}; allow_cpu {settings.allow_cpu}",
        f"hf cache    {hub_cache(settings.cache_dir)} (offline: nothing is downloaded at run time)",
    ]
    spec = ModelSpec.from_settings(settings)
    try:
        folders = locate(spec)
    except MissingModel as exc:
        lines.append(f"model       MISSING: {exc.detail}")
    else:
        sizes = folders.sizes()
        parts = ", ".join(f"{name} {_mib(size)}" for name, size in sizes.items())
        lines.append(f"model       found at {folders.root}: {parts}; total {_mib(sum(sizes.values()))}")
        lines.append(f"taesd       {folders.taesd}{' (the model vae/)' if folders.taesd_inside else ''}")
    lines += _control_lines(spec)
    if generator is not None:
        state = generator.describe()
        lines.append(f"diffusion   path {state['path'] or '–'}; reason off: {state['reason'] or 'none'}"
                     + (f"; fallbacks: {'; '.join(state['fallbacks'])}" if state["fallbacks"] else ""))
    return lines


def _control_lines(spec: ModelSpec) -> list[str]:
    """Doctor lines for the structure-control parts that are configured."""
    parts = [(setting, spec.controlnet_for(kind), "controlnet") for kind, setting in CONTROL_SETTINGS.items()]
    parts.append(("diffusion.depth_model", spec.depth_model, "depth"))
    lines = []
    for setting, ref, label in parts:
        if ref is None:
            continue
        try:
            if label == "depth":
                folder = resolve(ref, spec.cache_dir, f"depth model ({setting})", DEPTH_LAYOUT)
            else:
                folder = locate_controlnet(ref, spec.cache_dir, setting)
        except MissingModel as exc:
            lines.append(f"{label:<12}{setting}: MISSING: {exc.detail}")
        else:
            lines.append(f"{label:<12}{setting}: found at {folder} ({_mib(folder_bytes(folder))})")
    return lines


def probe_lines(settings: Any, device: Any, timeout_s: float = 120.0) -> list[str]:
    """`livegen doctor --probe`: build the diffusion stage as the node would (load, speed-ups,
    warm-up), run frames through a `background` scene, and say which UNet path really runs
    (eager, compiled, CUDA graphs), what fell back and why, and how long a frame took."""
    import time

    import numpy as np

    from livegen.diffusion.generator import DiffusionGenerator
    from livegen.effects.base import Frame

    started = time.perf_counter()
    generator = DiffusionGenerator(settings, device)
    generator.load()
    loaded_s = time.perf_counter() - started
    reason = generator.unavailable()
    if reason is not None:
        generator.close()
        return [f"probe       diffusion off: {reason}"]
    size = 512 if device.type == "cuda" else 64
    scene = generator.scene("a probe of the diffusion stage", {"size": size, "steps": 1, "similarity": 1.0})
    picture = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    times: list[float] = []
    deadline = time.monotonic() + timeout_s
    index = 0
    try:
        while len(times) < 5 and time.monotonic() < deadline:
            frame = Frame(index, rgb=picture, device=device)
            t0 = time.perf_counter()
            scene.prepare(frame)
            out = scene.background(frame)
            if out is not None:  # None while the prompt's embeddings are still being encoded
                if device.type == "cuda":
                    import torch

                    torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) * 1000.0)
            else:
                time.sleep(0.02)
            index += 1
    finally:
        scene.close()
        state = generator.describe()
        generator.close()
    lines = [f"probe       loaded and warmed up in {loaded_s:.1f} s; UNet path: {state['path']}"]
    lines.append("probe       fallbacks: " + ("; ".join(state["fallbacks"]) or "none"))
    if times:
        lines.append(f"probe       {len(times)} frames at {size}x{size}, 1 step: first {times[0]:.1f} ms, "
                     f"then {min(times[1:] or times):.1f}-{max(times[1:] or times):.1f} ms")
    else:
        lines.append(f"probe       FAILED: no frame came out within {timeout_s:.0f} s")
    return lines
