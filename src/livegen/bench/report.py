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


def write_result(result: dict[str, Any], folder: Path, name: str | None = None) -> Path:
    """`result` as JSON in `folder`, named `name` (default: scenario, preset and size)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or result_name(result))
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


FANOUT_INTRO = """\
## fanout: one publisher, many viewers

`livegen bench fanout`: a synthetic camera is published over WHIP to a node started as a
subprocess; viewers join over WHEP in steps, and each step is measured after a warm-up. The
whole ladder runs twice in one run, each on a fresh node: `output.mode: encode_once` (one
encoder per stream, packets fanned out) and `per_viewer` (aiortc encodes for every viewer).
*sent fps* is what the publisher (in the bench process) managed to send; *fps* is frames
delivered per viewer per second (min / median over the viewers); full rate means ≥ 95 % of the
nominal rate. *node CPU* is the node process's CPU time over the window in percent of one
core; *per 10 viewers* is the least-squares slope of node CPU over the viewer count. Latency is
read from the stamp at the one viewer that decodes; every other viewer counts frames from RTP
marker bits without decoding (it still sends receiver reports, and REMB in per_viewer mode,
whose encoders follow it), so the bench's own CPU (*bench CPU*, in brackets its event-loop
thread, which receives every viewer's packets) stays far below what decoding viewers would
cost; it still grows with the packet rate, as the node's does. *kbit/s* is the video payload
one counting viewer receives: a node's cost per viewer is per packet, so compare CPU per viewer
at like bitrates (libx264's average-bitrate control lets it swing between steps). Drops /
resyncs / keyframes are the node's output counters over the window (packets dropped from
viewer queues plus frames replaced in per-viewer mailboxes, skips to a keyframe, keyframes
forced); frames the node dropped before encoding are in the JSON (`node_stats.window.dropped`).
The machine is shared: compare numbers within one run.
"""


def _output_counts(step: dict[str, Any]) -> str:
    stats = step.get("node_stats") or {}
    out = (stats.get("window") or {}).get("output") or {}
    dropped = (out.get("viewer_packets_dropped") or 0) + (out.get("viewer_frames_dropped") or 0)
    if not out:
        return "–"
    return f"{dropped} / {out.get('viewer_resyncs', 0)} / {out.get('keyframes_forced', 0)}"


def _viewers(step: dict[str, Any]) -> str:
    requested = step.get("viewers_requested", step["viewers"])
    return str(step["viewers"]) if step["viewers"] == requested else f"{step['viewers']} of {requested}"


def _by_step(numbers: dict[str, Any]) -> str:
    steps = numbers.get("cpu_per_10_viewers_by_step_pct") or {}
    return ", ".join(f"{k}: {_num(v)}" for k, v in steps.items()) or "–"


def fanout_section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [
        FANOUT_INTRO,
        "| preset | video | s | mode | viewers | sent fps | fps min / median | p50 / p95 ms | node CPU %"
        " | bench CPU % (loop) | kbit/s per viewer | drops / resyncs / keyframes | device, cores | date (UTC) | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summaries = [
        "",
        "| file | node CPU % per 10 viewers, encode_once / per_viewer | encode_once by step"
        " | per_viewer by step | bench CPU % per 10 viewers | node CPU encode_once ÷ per_viewer"
        " | goal: 50 viewers at full rate, ≤ 10 % per 10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(results, key=lambda item: (item[1]["options"]["preset"], item[0])):
        o, m, modes = r["options"], r["machine"], r["modes"]
        for mode, numbers in modes.items():
            for step in numbers["steps"]:
                fps = step["fps_per_viewer"]
                lat = step["latency_ms"]
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            o["preset"],
                            f"{o['width']}×{o['height']} @ {o['fps']:g}",
                            f"{o['seconds']:g}",
                            mode,
                            _viewers(step),
                            _fps(step["sent_fps"]),
                            _pair(fps["min"], fps["median"], _fps),
                            _pair(lat["p50"], lat["p95"]),
                            _num(step["cpu"].get("node_process_pct")),
                            f"{_num(step['cpu'].get('bench_process_pct'))} ({_num(step['cpu'].get('bench_loop_pct'))})",
                            _ms((step.get("counting_viewer_kbps") or {}).get("median")),
                            _output_counts(step),
                            f"{m.get('torch_device')}, {m.get('cores')}",
                            r["date_utc"][:16].replace("T", " "),
                            f"[{name}]({name})",
                        ]
                    )
                    + " |"
                )
        ratios = ", ".join(f"×{n}: {_ratio(v)}" for n, v in r["cpu_ratio_once_to_per_viewer"].items())
        goal = r["goal"]
        summaries.append(
            f"| [{name}]({name})"
            f" | {_num(modes['encode_once']['cpu_per_10_viewers_pct'])}"
            f" / {_num(modes['per_viewer']['cpu_per_10_viewers_pct'])}"
            f" | {_by_step(modes['encode_once'])} | {_by_step(modes['per_viewer'])}"
            f" | {_num(modes['encode_once']['bench_cpu_per_10_viewers_pct'])}"
            f" / {_num(modes['per_viewer']['bench_cpu_per_10_viewers_pct'])}"
            f" | {ratios}"
            f" | full rate {'yes' if goal['full_rate_met'] else 'no'}"
            f" ({goal['viewers_at_full_rate']} of {goal['viewers_measured']}),"
            f" CPU {'yes' if goal['cpu_met'] else 'no'} |"
        )
    return "\n".join(lines + summaries) + "\n"


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


def fanout_table(result: dict[str, Any]) -> str:
    o, modes = result["options"], result["modes"]
    rows: list[tuple[str, ...]] = [
        ("mode", "viewers", "sent fps", "fps min", "fps median", "p50 ms", "p95 ms", "node CPU %",
         "bench CPU %", "bench loop %", "decoder %", "machine %", "kbit/s", "drops/resyncs/keyframes",
         "encode p50 ms"),
    ]
    for mode, numbers in modes.items():
        for step in numbers["steps"]:
            cpu, fps, lat = step["cpu"], step["fps_per_viewer"], step["latency_ms"]
            end = (step.get("node_stats") or {}).get("end") or {}
            encode = ((end.get("output") or {}).get("encode_ms") or {}).get("p50")
            rows.append((
                mode, _viewers(step), _cell(step["sent_fps"]), _cell(fps["min"]), _cell(fps["median"]),
                _cell(lat["p50"]), _cell(lat["p95"]), _cell(cpu.get("node_process_pct")),
                _cell(cpu.get("bench_process_pct")), _cell(cpu.get("bench_loop_pct")),
                _cell(cpu.get("decoder_thread_pct")), _cell(cpu.get("machine_busy_pct")),
                _cell((step.get("counting_viewer_kbps") or {}).get("median")),
                _output_counts(step), _cell(encode) if mode == "encode_once" else "–",
            ))
    once, each = modes["encode_once"], modes["per_viewer"]
    ratios = ", ".join(f"×{n} {_ratio(v)}" for n, v in result["cpu_ratio_once_to_per_viewer"].items())
    goal = result["goal"]

    return "\n".join([
        f"fanout {o['preset']} {o['width']}x{o['height']} @ {o['fps']:g} fps: {o['seconds']:g} s measured per step"
        f" after {o['warmup']:g} s warm-up; codec {once.get('codec')}",
        *_aligned(rows),
        f"  node CPU per 10 extra viewers (least squares): encode_once {_num(once['cpu_per_10_viewers_pct'])} %"
        f" ({_by_step(once)}), per_viewer {_num(each['cpu_per_10_viewers_pct'])} % ({_by_step(each)})",
        f"  bench CPU per 10 extra (counting) viewers: encode_once {_num(once['bench_cpu_per_10_viewers_pct'])} %,"
        f" per_viewer {_num(each['bench_cpu_per_10_viewers_pct'])} %",
        f"  node CPU encode_once ÷ per_viewer: {ratios}",
        f"  goal ({goal['target']}): full rate {'met' if goal['full_rate_met'] else 'not met'}"
        f" ({goal['viewers_at_full_rate']} of {goal['viewers_measured']} viewers),"
        f" CPU {'met' if goal['cpu_met'] else 'not met'} ({_num(goal['cpu_per_10_viewers_pct'])} % per 10)",
    ])


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


# ---- any scenario: comparison and the top-level README summary -------------------------------
COMPARED_LEAF = re.compile(r"(^|_)(p50|p95|p99|mean|fps|pct)(_|$)|fps")


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a result that is a latency, a rate or a CPU share, by its path."""
    found: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("machine", "options", "node_stats"):
                continue
            found.update(_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            label = value.get("mode", "") + "/" + str(value.get("size", "")) if isinstance(value, dict) else ""
            found.update(_numbers(value, f"{prefix}[{index}{' ' + label if label.strip('/') else ''}]"))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        if COMPARED_LEAF.search(prefix.rsplit(".", 1)[-1]):
            found[prefix] = float(data)
    return found


def compare_results(old: dict[str, Any], new: dict[str, Any], limit: int = 60) -> str:
    """How `new` differs from `old` (any scenario): every latency, rate and CPU figure both have."""
    lines = [f"compared with the run of {old.get('date_utc', '?')} ({old.get('command', '?')}):"]
    if old.get("scenario") != new.get("scenario"):
        return lines[0] + f"\n  not comparable: {old.get('scenario')} vs {new.get('scenario')}"
    if old.get("options") != new.get("options"):
        lines.append("  note: the options differ, so the numbers are not like for like")
    a, b = _numbers(old), _numbers(new)
    rows: list[tuple[str, ...]] = [("", "old", "new", "change")]
    for key in [k for k in b if k in a][:limit]:
        x, y = a[key], b[key]
        change = f"{y - x:+.1f}" + (f" ({(y - x) / x:+.0%})" if x else "")
        rows.append((key, f"{x:.1f}", f"{y:.1f}", change))
    if len(rows) == 1:
        return lines[0] + "\n  nothing in common to compare"
    return "\n".join(lines + _aligned(rows))


def _when(result: dict[str, Any]) -> str:
    m = result.get("machine") or {}
    where = m.get("gpu") or f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"
    return f"{where}; {str(result.get('date_utc', '?'))[:10]}"


def summary_section(folder: Path) -> str:
    """The README's performance table: the headline numbers of every committed result."""
    rows = ["| scenario | case | result | machine; date | file |", "|---|---|---|---|---|"]

    def row(scenario: str, case: str, text: str, result: dict[str, Any], name: str) -> None:
        rows.append(f"| {scenario} | {case} | {text} | {_when(result)} | [{name}](bench/results/{name}) |")

    for name, r in load_results(folder, "e2e"):
        o, added, n = r["options"], r["added_latency_ms"], r["node"]
        row("e2e", f"{o['preset']} {o['width']}×{o['height']}@{o['fps']:g}",
            f"node adds {_signed(added['p50'])} / {_signed(added['p95'])} ms p50 / p95; {_fps(n['delivered_fps'])} fps",
            r, name)
    for name, r in load_results(folder, "fanout"):
        once = r["modes"]["encode_once"]
        last = once["steps"][-1]
        each = r["modes"].get("per_viewer", {}).get("steps", [{}])[-1]
        row("fanout", f"{r['options']['preset']}, {_viewers(last)} viewers",
            f"encode-once {_fps(last['fps_per_viewer']['median'])} fps per viewer, "
            f"{_num(once['cpu_per_10_viewers_pct'])} % of a core per 10 viewers; per-viewer encoding "
            f"{_fps((each.get('fps_per_viewer') or {}).get('median'))} fps", r, name)
    for name, r in load_results(folder, "pipeline"):
        o = r["options"]
        for preset, p in r["presets"].items():
            q = p["processing_ms"]
            row("pipeline", f"{preset} {o['width']}×{o['height']}@{o['fps']:g}",
                f"{_fps(p['fps_out'])} fps; processing p50 / p95 / p99 {_ms(q['p50'])} / {_ms(q['p95'])} / "
                f"{_ms(q['p99'])} ms", r, name)
    for name, r in load_results(folder, "diffusion"):
        for case in r.get("cases", []):
            if case.get("streams") not in (1, 4) or case.get("skipped"):
                continue
            total = (case.get("parts_ms") or {}).get("total") or {}
            row("diffusion", f"{r.get('architecture')} {case['mode']} {case['size']}, {case['steps']} step(s), "
                f"{case['streams']} stream(s)",
                f"{_fps(case.get('fps_per_stream'))} fps per stream; p50 / p95 {_ms(total.get('p50'))} / "
                f"{_ms(total.get('p95'))} ms", r, name)
    return "\n".join(rows) + "\n"


def refresh_summary(readme: Path, folder: Path) -> Path | None:
    """Regenerate the marked performance table of the project README from `folder`."""
    if not readme.is_file():
        return None
    begin, end = "<!-- livegen-bench:summary:begin -->", "<!-- livegen-bench:summary:end -->"
    text = readme.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return None
    head, rest = text.split(begin, 1)
    readme.write_text(head + begin + "\n" + summary_section(folder) + end + rest.split(end, 1)[1], encoding="utf-8")
    return readme
