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
from livegen.bench.degradation import frames_text, shares_from_counts
from livegen.bench.encoding import encoder_text

INTRO = """\
## e2e: publisher → node → viewer latency

`livegen bench e2e`: a synthetic camera with a delay stamp is published over WHIP to a node
started as a subprocess and watched over WHEP; latency is the viewer's arrival time minus the
stamp (one process, one monotonic clock). *baseline* is the same track over a plain aiortc
loopback in the same run; *added* is node − baseline. Percentiles cover the measured window
after the warm-up; CPU is percent of one core. The viewer (plain aiortc in both paths)
completes a frame only when the next one starts, about one frame interval; the node's own
ingest completes frames on the RTP marker bit and does not pay that. The baseline sends what the
node sends its viewers: the same codec, encoded with the node's encoder settings (*codec*
baseline / node viewer; a run where they differ says so). *node frames* is what the node's own
stats say happened to the frames in the window: dropped, fallen back (e.g. a generated
background without a diffusion model) or degraded to keep up; empty when none was.

| preset | video | s | codec | baseline p50 / p95 ms | node p50 / p95 ms | added p50 / p95 ms\
 | node ÷ baseline p50 | fps baseline / node | lost baseline / node | node frames | node CPU %\
 | device, cores | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"""

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


def egress_codec(node: dict[str, Any]) -> str | None:
    """The codec the node sent its viewer (older results have it only in "VP8 in, H264 out")."""
    if node.get("egress_codec"):
        return node["egress_codec"]
    return str(node.get("codec") or "").rpartition(", ")[2].removesuffix(" out") or None


def not_like_for_like(r: dict[str, Any]) -> str | None:
    """How the baseline differed from what the node sent its viewer, None when it did not."""
    b, n = r["baseline"], r["node"]
    like = r.get("like_for_like") or {"codec": b.get("codec") == egress_codec(n), "encoder": None}
    problems = []
    if not like["codec"]:
        problems.append(f"baseline {b.get('codec')}, node {egress_codec(n)}")
    if like["encoder"] is False:
        problems.append(f"baseline {encoder_text(b.get('encoder'))}, node {encoder_text(n.get('encoder'))}")
    return "; ".join(problems) or None


def node_frames(node: dict[str, Any]) -> str | None:
    """What the node's stats say happened to the window's frames (dropped, fallen back,
    degraded, over budget), None when nothing was."""
    stats = node.get("node_stats") or {}
    window = stats.get("window") or {}
    notes = window.get("degraded")
    if notes is None:  # recorded before the window kept them: from the whole answers
        start, end = (stats.get("start") or {}).get("degraded") or {}, (stats.get("end") or {}).get("degraded") or {}
        notes = {k: v - start.get(k, 0) for k, v in end.items() if v - start.get(k, 0)}
    frames = window.get("frames_out") or 0
    over = (window.get("over_budget") or 0) / frames if frames else 0.0
    parts = [said] if (said := frames_text(shares_from_counts(notes, frames), notes, over_budget=over)) else []
    if window.get("dropped"):
        parts.append("dropped " + ", ".join(f"{k} {v}" for k, v in window["dropped"].items()))
    return ", ".join(parts) or None


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [INTRO]
    for name, r in sorted(results, key=lambda item: (item[1]["options"]["preset"], item[0])):
        o, b, n, m = r["options"], r["baseline"], r["node"], r["machine"]
        added = r["added_latency_ms"]
        lines.append(markdown_row([
            o["preset"],
            video(o),
            f"{o['seconds']:g}",
            f"{b.get('codec')} / {egress_codec(n)}" + (" (not like for like)" if not_like_for_like(r) else ""),
            pair(b["latency_ms"]["p50"], b["latency_ms"]["p95"]),
            pair(n["latency_ms"]["p50"], n["latency_ms"]["p95"]),
            pair(added["p50"], added["p95"], signed),
            ratio(r["latency_ratio"]["p50"]),
            pair(b["delivered_fps"], n["delivered_fps"], fps),
            pair(b["frames_lost"], n["frames_lost"], plain),
            node_frames(n) or "",
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
        f" after {o['warmup']:g} s warm-up",
        f"  baseline: sends {b.get('codec')} with {encoder_text(b.get('encoder'))}",
        f"  node: {n.get('codec')}; sends with {encoder_text(n.get('encoder'))}",
        *aligned(rows),
    ]
    differs = not_like_for_like(result)
    if differs:
        lines.append(f"  NOT like for like: {differs}")
    stats = n.get("node_stats")
    if stats:
        lines.append("  node's own stats over the window: " + node_view(stats))
    said = node_frames(n)
    if said:
        lines.append(f"  node frames: {said}")
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
        f"degraded {window.get('degraded') or 'none'}",
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
    """The added latency against the baseline's codec; what the node did to the frames and a
    baseline that was not like for like are said in the row, never left out."""
    o, added, n, b = r["options"], r["added_latency_ms"], r["node"], r["baseline"]
    text = (f"node adds {signed(added['p50'])} / {signed(added['p95'])} ms p50 / p95 over a {b.get('codec')} "
            f"loopback; {fps(n['delivered_fps'])} fps")
    if said := node_frames(n):
        text += f" — {said}"
    if differs := not_like_for_like(r):
        text += f"; not like for like ({differs})"
    return [(f"{o['preset']} {o['width']}×{o['height']}@{o['fps']:g}", text)]
