"""How e2e results read: the results README's section, the table printed after a run, the
comparison with an earlier run (`--compare`) and the rows of the project README's table.
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import (
    MISSING,
    aligned,
    cell,
    file_link,
    fps,
    markdown_row,
    pair,
    plain,
    ratio,
    run_date,
    signed,
)
from livegen.bench.comparison import change_row, comparison

INTRO = """\
## e2e: publisher → node → viewer latency

`livegen bench e2e`: a synthetic camera with a delay stamp is published over WHIP to a node
started as a subprocess and watched over WHEP; latency is the viewer's arrival time minus the
stamp (one process, one monotonic clock). *baseline* is the same track over a plain aiortc
loopback in the same run; *added* is node − baseline. Percentiles cover the measured window
after the warm-up; CPU is percent of one core. The viewer (plain aiortc in both paths)
completes a frame only when the next one starts, about one frame interval; the node's own
ingest completes frames on the RTP marker bit and does not pay that.

| preset | video | s | baseline p50 / p95 ms | node p50 / p95 ms | added p50 / p95 ms\
 | node ÷ baseline p50 | fps baseline / node | lost baseline / node | node CPU %\
 | device, cores | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|---|---|"""

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


def video(options: dict[str, Any]) -> str:
    return f"{options['width']}×{options['height']} @ {options['fps']:g}"


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [INTRO]
    for name, r in sorted(results, key=lambda item: (item[1]["options"]["preset"], item[0])):
        o, b, n, m = r["options"], r["baseline"], r["node"], r["machine"]
        added = r["added_latency_ms"]
        lines.append(markdown_row([
            o["preset"],
            video(o),
            f"{o['seconds']:g}",
            pair(b["latency_ms"]["p50"], b["latency_ms"]["p95"]),
            pair(n["latency_ms"]["p50"], n["latency_ms"]["p95"]),
            pair(added["p50"], added["p95"], signed),
            ratio(r["latency_ratio"]["p50"]),
            pair(b["delivered_fps"], n["delivered_fps"], fps),
            pair(b["frames_lost"], n["frames_lost"], plain),
            plain(n["cpu"].get("node_process_pct")),
            f"{m.get('torch_device')}, {m.get('cores')}",
            run_date(r),
            file_link(name),
        ]))
    return "\n".join(lines) + "\n"


def table(result: dict[str, Any]) -> str:
    o, b, n = result["options"], result["baseline"], result["node"]
    added, ratios = result["added_latency_ms"], result["latency_ratio"]
    rows: list[tuple[str, ...]] = [("", "baseline", "node", "added", "ratio")]
    for label, key in (
        ("frames sent", "frames_sent"),
        ("frames received", "frames_received"),
        ("delivered fps", "delivered_fps"),
        ("frames lost", "frames_lost"),
        ("undecodable stamps", "frames_undecodable"),
        ("longest gap ms", "max_gap_ms"),
    ):
        rows.append((label, cell(b[key]), cell(n[key]), "", ""))
    for key in ("p50", "p95", "p99", "mean"):
        lat_b, lat_n = b["latency_ms"][key], n["latency_ms"][key]
        rows.append((f"latency {key} ms", cell(lat_b), cell(lat_n), cell(added[key]), ratio(ratios[key])))
    for label, key in (("bench process CPU %", "bench_process_pct"), ("node process CPU %", "node_process_pct"),
                       ("machine busy %", "machine_busy_pct")):
        rows.append((label, cell(b["cpu"].get(key)), cell(n["cpu"].get(key)), "", ""))

    lines = [
        f"e2e {o['preset']} {o['width']}x{o['height']} @ {o['fps']:g} fps: {o['seconds']:g} s measured"
        f" after {o['warmup']:g} s warm-up; codec {b.get('codec')} (baseline), {n.get('codec')} (node)",
        *aligned(rows),
    ]
    stats = n.get("node_stats")
    if stats:
        lines.append("  node's own stats over the window: " + node_view(stats))
    return "\n".join(lines)


def p50_p95(summary: Any) -> str:
    if not isinstance(summary, dict):
        return MISSING
    return f"{cell(summary.get('p50'))}/{cell(summary.get('p95'))} ms"


def node_view(stats: dict[str, Any]) -> str:
    """One line from the node's stats; every field is optional, since the API grows."""
    window, end = stats.get("window", {}), stats.get("end", {})
    output = end.get("output") if isinstance(end.get("output"), dict) else {}
    parts = [
        f"frames in/out {window.get('frames_in', '–')}/{window.get('frames_out', '–')}",
        f"dropped {window.get('dropped') or 'none'}",
        f"over budget {window.get('over_budget', '–')}",
        f"fps in/out at the end {end.get('fps_in', '–')}/{end.get('fps_out', '–')}",
        f"processing p50/p95 {p50_p95(end.get('latency_ms'))}",
        f"in-node p50/p95 {p50_p95(end.get('node_latency_ms'))}",
    ]
    if output:
        parts.append(f"output {output.get('mode', '?')} {output.get('encoders', '')}".rstrip())
        parts.append(f"encode p50/p95 {p50_p95(output.get('encode_ms'))}")
    return ", ".join(parts)


def _get(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)  # type: ignore[assignment]
    return data


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The e2e figures that matter, old against new (`COMPARED`)."""
    return comparison(old, new, [change_row(label, _get(old, keys), _get(new, keys), decimals)
                                 for label, keys, decimals in COMPARED])


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    o, added, n = r["options"], r["added_latency_ms"], r["node"]
    return [(f"{o['preset']} {o['width']}×{o['height']}@{o['fps']:g}",
             f"node adds {signed(added['p50'])} / {signed(added['p95'])} ms p50 / p95; {fps(n['delivered_fps'])} fps")]
