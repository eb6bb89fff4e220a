"""What a bench result's numbers depend on: the machine, the software versions, the checkout's
revision (its commit, and whether files it tracks had changed) and the torch device; and the time
a result is dated with (UTC).

No machine paths are recorded, so result files can be committed and compared in git.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
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


BENCH_WRITES = ("bench/results", "README.md")
"""What the bench itself writes into a checkout (results, their README, the project README's
table): a change there does not make the checkout dirty, since no number depends on it, and the
second result of a run would otherwise always read dirty."""


def checkout_root() -> Path:
    """The folder livegen runs from: a git checkout when it is installed from one."""
    return bundled_dir("configs").parent


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def checkout_changes(root: Path | None = None) -> list[str] | None:
    """Tracked files of the checkout at `root` changed since its commit (staged or not),
    except `BENCH_WRITES`; None when `root` is not a git checkout."""
    root = checkout_root() if root is None else root
    if not (root / ".git").exists():
        return None
    excluded = [f":(exclude){path}" for path in BENCH_WRITES]
    status = _git(root, "status", "--porcelain=v1", "--untracked-files=no", "--", ".", *excluded)
    if status is None:
        return None
    return [line[3:] for line in status.splitlines() if line.strip()]


def checkout_revision(root: Path | None = None) -> str | None:
    """The checkout's commit (`git describe --always`), with `-dirty` when tracked files other
    than `BENCH_WRITES` changed; None when livegen does not run from a git checkout."""
    root = checkout_root() if root is None else root
    changes = checkout_changes(root)
    described = _git(root, "describe", "--always") if changes is not None else None
    if not described or not described.strip():
        return None
    return described.strip() + ("-dirty" if changes else "")


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
