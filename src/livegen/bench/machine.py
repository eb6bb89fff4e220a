"""What a bench result's numbers depend on: the machine, the software versions, the checkout's
revision and the torch device; and the time a result is dated with (UTC).

No machine paths are recorded, so result files can be committed and compared in git.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from livegen.resources import bundled_dir


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def checkout_revision() -> str | None:
    """`git describe --always --dirty` of the checkout livegen runs from, if it is one."""
    root = bundled_dir("configs").parent
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def machine_info(device: str | None) -> dict[str, Any]:
    """What the numbers depend on. `device` is the torch device the measured engine ran on."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "aiortc": _version("aiortc"),
        "av": _version("av"),
        "aiohttp": _version("aiohttp"),
        "livegen": _version("livegen"),
        "revision": checkout_revision(),
        "torch_device": device,
    }
    if device and device.startswith("cuda"):
        import torch  # only here: the network scenarios never need it otherwise

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info
