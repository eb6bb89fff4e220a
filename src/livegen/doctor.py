"""`livegen doctor`: what this machine offers the node (device, codecs, versions, settings)."""

from __future__ import annotations

import platform

from livegen.config import Settings


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # a GPU check carries only the diffusion stage's needs
        return "not installed"


def report(settings: Settings, probe: bool = False) -> str:
    """What the machine offers; with `probe`, the diffusion stage is built and runs frames."""
    import av
    import torch

    from livegen.engine.worker import select_device

    lines = [
        f"python      {platform.python_version()} ({platform.machine()})",
        f"torch       {torch.__version__} (CUDA build: {torch.version.cuda or 'no'})",
        f"cuda        {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}",
        f"device      {select_device(settings.engine.device)} (engine.device = {settings.engine.device})",
        f"aiortc      {_version('aiortc')}",
        f"av          {av.__version__} (ffmpeg {'.'.join(map(str, av.library_versions.get('libavcodec', ())))})",
    ]
    for codec in ("libx264", "h264_nvenc", "libvpx"):
        try:
            av.codec.Codec(codec, "w")
            state = "yes"
        except Exception:
            state = "no"
        lines.append(f"encoder     {codec}: {state}")
    from livegen.diffusion.tools import doctor_lines

    lines += doctor_lines(settings.diffusion)
    if probe:
        from livegen.diffusion.tools import probe_lines

        lines += probe_lines(settings.diffusion, select_device(settings.engine.device))
    lines.append(f"web pages   {settings.web_dir()}")
    lines.append(f"presets     {settings.presets_dir()}")
    return "\n".join(lines)
