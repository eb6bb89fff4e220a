"""How overload results read: the results README's section (a row per stream of every run, its
in-node p95 reading by reading, then the run's verdict), the table printed after a run and the
project README's row.
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import MISSING, aligned, cell, file_link, fixed, fps, markdown_row, pair, plain, run_date
from livegen.bench.verdicts import met_text

INTRO = """\
## overload: more streams than the node can run at full rate

`livegen bench overload`: several synthetic cameras are published over WHIP at one preset to
a node started as a subprocess, each watched by a viewer that only counts frames; after a
warm-up the node's stats of every stream are read every few seconds. *fps out* is frames the
node processed per second over the window (and what the publisher in the bench sent, and the
viewer received); *in-node* p50 / p95 is the node's latency from arrival to the end of
processing over its last 600 frames, at the end of the window; *p95 readings* are the in-node
p95 at each reading, so a latency that keeps rising shows; dropped / degraded are the node's
counters over the window; *load* is what the node reports of its load shedding, at the end.
Goal: every stream's in-node p95 at the end is within `engine.budget_ms`.

| preset | video | streams | stream | sent / out / viewer fps | in-node p50 / p95 ms | p95 readings ms\
 | dropped / degraded | load | node CPU % | budget ms | goal | device, cores | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"""


def _latency(stream: dict[str, Any]) -> dict[str, Any]:
    return (stream.get("node") or {}).get("node_latency_ms") or {}


def counts(stream: dict[str, Any]) -> str:
    window = (stream.get("node") or {}).get("window") or {}
    if not window:
        return MISSING
    return f"{sum((window.get('dropped') or {}).values())} / {sum((window.get('degraded') or {}).values())}"


def readings(stream: dict[str, Any]) -> str:
    values = [((r.get("node_latency_ms") or {}).get("p95")) for r in stream.get("readings", [])]
    return " → ".join(fixed(v) for v in values) or MISSING


def load_text(load: Any) -> str:
    """The `load` a stream's stats report, compactly: its numbers and short values as key=value."""
    if not isinstance(load, dict):
        return MISSING if load is None else str(load)
    parts = [f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
             for key, value in load.items() if isinstance(value, (int, float, str, bool)) or value is None]
    return ", ".join(parts) or MISSING


def rates(stream: dict[str, Any]) -> str:
    node = stream.get("node") or {}
    return f"{fps(stream.get('sent_fps'))} / {fps(node.get('fps_out_window'))} / " \
           f"{fps((stream.get('viewer') or {}).get('delivered_fps'))}"


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [INTRO]
    for name, r in sorted(results, key=lambda item: (item[1]["options"]["preset"], item[0])):
        o, m = r["options"], r["machine"]
        goal = r["verdicts"][0]
        for stream_name, stream in r["streams"].items():
            lat = _latency(stream)
            lines.append(markdown_row([
                o["preset"],
                f"{o['width']}×{o['height']} @ {o['fps']:g}",
                str(o["streams"]),
                stream_name,
                rates(stream),
                pair(lat.get("p50"), lat.get("p95")),
                readings(stream),
                counts(stream),
                load_text((stream.get("node") or {}).get("load")),
                plain(r["cpu"].get("node_process_pct")),
                plain(goal.get("budget_ms")),
                met_text(goal["met"]),
                f"{m.get('torch_device')}, {m.get('cores')}",
                run_date(r),
                file_link(name),
            ]))
    return "\n".join(lines) + "\n"


def table(result: dict[str, Any]) -> str:
    o = result["options"]
    rows: list[tuple[str, ...]] = [("stream", "sent fps", "fps out", "viewer fps", "in-node p50", "in-node p95",
                                    "processing p95", "dropped/degraded", "p95 readings ms")]
    for name, stream in result["streams"].items():
        node, lat = stream.get("node") or {}, _latency(stream)
        rows.append((name, cell(stream.get("sent_fps")), cell(node.get("fps_out_window")),
                     cell((stream.get("viewer") or {}).get("delivered_fps")), cell(lat.get("p50")),
                     cell(lat.get("p95")), cell((node.get("latency_ms") or {}).get("p95")), counts(stream),
                     readings(stream)))
    goal = result["verdicts"][0]
    lines = [
        f"overload {o['streams']} × {o['preset']} {o['width']}x{o['height']} @ {o['fps']:g} fps: {o['seconds']:g} s"
        f" after {o['warmup']:g} s warm-up, read every {o['interval']:g} s; codec {result.get('codec')}",
        *aligned(rows),
        f"  node CPU {plain(result['cpu'].get('node_process_pct'))} %, bench CPU"
        f" {plain(result['cpu'].get('bench_process_pct'))} %, machine {plain(result['cpu'].get('machine_busy_pct'))} %",
    ]
    for name, stream in result["streams"].items():
        load = (stream.get("node") or {}).get("load")
        if load:
            lines.append(f"  {name} load: {load_text(load)}")
    lines.append(f"  goal: {goal['goal']} ({plain(goal.get('budget_ms'))} ms): {met_text(goal['met'])}")
    return "\n".join(lines)


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    o, goal = r["options"], r["verdicts"][0]
    out = [(s.get("node") or {}).get("fps_out_window") for s in r["streams"].values()]
    out = [v for v in out if v is not None]
    return [(f"{o['streams']} × {o['preset']} {o['width']}×{o['height']}@{o['fps']:g}",
             f"fps out per stream {fps(min(out)) if out else MISSING}–{fps(max(out)) if out else MISSING};"
             f" worst in-node p95 {fixed(goal.get('worst_p95_ms'))} ms (goal ≤ {plain(goal.get('budget_ms'))} ms:"
             f" {met_text(goal['met'])})")]
