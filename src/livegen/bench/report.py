"""Bench results on disk and on screen: machine facts, the JSON file, the bench/results README
section regenerated from every JSON file in the folder, a terminal table and a comparison.

Files carry no machine paths, so they can be committed and compared in git.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from livegen.resources import bundled_dir

log = logging.getLogger(__name__)

README = "README.md"
README_TITLE = (
    "# Benchmark results\n\n"
    "Written by `livegen bench`; each scenario regenerates its own section from the JSON files here.\n"
)


# ---- facts ------------------------------------------------------------------------------------
def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


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
    """What the numbers depend on. `device` is the node's torch device as its /ready reports it."""
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
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


# ---- files ------------------------------------------------------------------------------------
def result_name(result: dict[str, Any]) -> str:
    options = result["options"]
    preset = re.sub(r"[^A-Za-z0-9_.-]", "_", options["preset"])
    return f"{result['scenario']}-{preset}-{options['width']}x{options['height']}.json"


def write_result(result: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / result_name(result)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def load_results(folder: Path, scenario: str) -> list[tuple[str, dict[str, Any]]]:
    results = []
    for path in sorted(folder.glob(f"{scenario}-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", path.name, exc)
            continue
        if isinstance(data, dict) and data.get("scenario") == scenario:
            results.append((path.name, data))
    return results


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _pair(a: float | None, b: float | None, fmt=_ms) -> str:
    return f"{fmt(a)} / {fmt(b)}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _fps(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def e2e_section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [
        "## e2e: publisher → node → viewer latency",
        "",
        "`livegen bench e2e`: a synthetic camera with a delay stamp is published over WHIP to a node",
        "started as a subprocess and watched over WHEP; latency is the viewer's arrival time minus the",
        "stamp (one process, one monotonic clock). *baseline* is the same track over a plain aiortc",
        "loopback in the same run; *added* is node − baseline. Percentiles cover the measured window",
        "after the warm-up; CPU is percent of one core. The viewer (plain aiortc in both paths)",
        "completes a frame only when the next one starts, about one frame interval; the node's own",
        "ingest completes frames on the RTP marker bit and does not pay that.",
        "",
        "| preset | video | s | baseline p50 / p95 ms | node p50 / p95 ms | added p50 / p95 ms"
        " | node ÷ baseline p50 | fps baseline / node | lost baseline / node | node CPU %"
        " | device, cores | date (UTC) | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(results, key=lambda item: (item[1]["options"]["preset"], item[0])):
        o, b, n, m = r["options"], r["baseline"], r["node"], r["machine"]
        added, ratio = r["added_latency_ms"], r["latency_ratio"]
        lines.append(
            "| "
            + " | ".join(
                [
                    o["preset"],
                    f"{o['width']}×{o['height']} @ {o['fps']:g}",
                    f"{o['seconds']:g}",
                    _pair(b["latency_ms"]["p50"], b["latency_ms"]["p95"]),
                    _pair(n["latency_ms"]["p50"], n["latency_ms"]["p95"]),
                    _pair(added["p50"], added["p95"], _signed),
                    _ratio(ratio["p50"]),
                    _pair(b["delivered_fps"], n["delivered_fps"], _fps),
                    _pair(b["frames_lost"], n["frames_lost"], _num),
                    _num(n["cpu"].get("node_process_pct")),
                    f"{m.get('torch_device')}, {m.get('cores')}",
                    r["date_utc"][:16].replace("T", " "),
                    f"[{name}]({name})",
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def refresh_readme(folder: Path, scenario: str, section: str) -> Path:
    """Replace (or append) `scenario`'s marked section of the folder's README; keep the rest."""
    path = folder / README
    begin, end = f"<!-- livegen-bench:{scenario}:begin -->", f"<!-- livegen-bench:{scenario}:end -->"
    block = f"{begin}\n{section}{end}\n"
    text = path.read_text(encoding="utf-8") if path.is_file() else README_TITLE
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")
    return path


# ---- screen -----------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + row[0].ljust(widths[0]) + "".join("  " + cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))
        for row in rows
    ]


def e2e_table(result: dict[str, Any]) -> str:
    o, b, n = result["options"], result["baseline"], result["node"]
    added, ratio = result["added_latency_ms"], result["latency_ratio"]
    rows: list[tuple[str, ...]] = [("", "baseline", "node", "added", "ratio")]
    for label, key in (
        ("frames sent", "frames_sent"),
        ("frames received", "frames_received"),
        ("delivered fps", "delivered_fps"),
        ("frames lost", "frames_lost"),
        ("undecodable stamps", "frames_undecodable"),
        ("longest gap ms", "max_gap_ms"),
    ):
        rows.append((label, _cell(b[key]), _cell(n[key]), "", ""))
    for key in ("p50", "p95", "p99", "mean"):
        lat_b, lat_n = b["latency_ms"][key], n["latency_ms"][key]
        rows.append((f"latency {key} ms", _cell(lat_b), _cell(lat_n), _cell(added[key]), _ratio(ratio[key])))
    for label, key in (("bench process CPU %", "bench_process_pct"), ("node process CPU %", "node_process_pct"),
                       ("machine busy %", "machine_busy_pct")):
        rows.append((label, _cell(b["cpu"].get(key)), _cell(n["cpu"].get(key)), "", ""))

    lines = [
        f"e2e {o['preset']} {o['width']}x{o['height']} @ {o['fps']:g} fps: {o['seconds']:g} s measured"
        f" after {o['warmup']:g} s warm-up; codec {b.get('codec')} (baseline), {n.get('codec')} (node)",
        *_aligned(rows),
    ]
    stats = n.get("node_stats")
    if stats:
        lines.append("  node's own stats over the window: " + _node_view(stats))
    return "\n".join(lines)


def _p50_p95(summary: Any) -> str:
    if not isinstance(summary, dict):
        return "–"
    return f"{_cell(summary.get('p50'))}/{_cell(summary.get('p95'))} ms"


def _node_view(stats: dict[str, Any]) -> str:
    """One line from the node's stats; every field is optional, since the API grows."""
    window, end = stats.get("window", {}), stats.get("end", {})
    output = end.get("output") if isinstance(end.get("output"), dict) else {}
    parts = [
        f"frames in/out {window.get('frames_in', '–')}/{window.get('frames_out', '–')}",
        f"dropped {window.get('dropped') or 'none'}",
        f"over budget {window.get('over_budget', '–')}",
        f"fps in/out at the end {end.get('fps_in', '–')}/{end.get('fps_out', '–')}",
        f"processing p50/p95 {_p50_p95(end.get('latency_ms'))}",
        f"in-node p50/p95 {_p50_p95(end.get('node_latency_ms'))}",
    ]
    if output:
        parts.append(f"output {output.get('mode', '?')} {output.get('encoders', '')}".rstrip())
        parts.append(f"encode p50/p95 {_p50_p95(output.get('encode_ms'))}")
    return ", ".join(parts)


COMPARED = (  # label, where in the result, decimals
    ("baseline p50 ms", ("baseline", "latency_ms", "p50"), 1),
    ("baseline p95 ms", ("baseline", "latency_ms", "p95"), 1),
    ("node p50 ms", ("node", "latency_ms", "p50"), 1),
    ("node p95 ms", ("node", "latency_ms", "p95"), 1),
    ("added p50 ms", ("added_latency_ms", "p50"), 1),
    ("added p95 ms", ("added_latency_ms", "p95"), 1),
    ("node ÷ baseline p50", ("latency_ratio", "p50"), 2),
    ("node fps", ("node", "delivered_fps"), 1),
    ("node frames lost", ("node", "frames_lost"), 0),
    ("node CPU %", ("node", "cpu", "node_process_pct"), 1),
)


def _get(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)  # type: ignore[assignment]
    return data


def comparison(old: dict[str, Any], new: dict[str, Any]) -> str:
    lines = [f"compared with the run of {old.get('date_utc', '?')} ({old.get('command', '?')}):"]
    if old.get("options") != new.get("options"):
        lines.append("  note: the options differ, so the numbers are not like for like")
    rows: list[tuple[str, ...]] = [("", "old", "new", "change")]
    for label, keys, decimals in COMPARED:
        a, b = _get(old, keys), _get(new, keys)
        show = lambda v, decimals=decimals: "–" if v is None else f"{v:.{decimals}f}"  # noqa: E731
        change = ""
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            change = f"{b - a:+.{decimals}f}" + (f" ({(b - a) / a:+.0%})" if a else "")
        rows.append((label, show(a), show(b), change))
    return "\n".join(lines + _aligned(rows))
