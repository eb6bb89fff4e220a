"""How soak results read: the results README's section (a row per measured row of every run, then
a line per run with its verdicts), the table printed after a run and the project README's row.
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import MISSING, aligned, cell, file_link, fixed, fps, markdown_row, pair, plain, run_date
from livegen.bench.verdicts import met_text

INTRO = """\
## soak: one stream for a long while

`livegen bench soak`: a synthetic camera with a delay stamp is published over WHIP to a node
started as a subprocess, at a preset, and watched over WHEP by one decoding viewer for
`--minutes`; every `--seconds` (a minute by default) is one row. *RSS* is the node process's
resident memory at the end of the row (/proc), beside its threads and open files; *latency* is
publisher → viewer over the row, read from the stamp (as e2e); *in-node* is the node's own
p50 / p95 from arrival to the end of processing, over its last 600 frames; *fps out* is frames
the node processed per second over the row; drops and degradations are the node's counters over
the row. Goals: RSS at the end grows < 5 % over RSS at the end of the first row (which holds the
start-up), and the last row's latency p95 is at most the first row's + 10 %: the viewer's
latency where the stamp survives the preset, else the in-node one (*basis*; `blur` blurs the
stamp away with the rest of the background, so at `blur` there is no viewer latency).
*bench CPU %* is the bench process's own (the same work every row: when it rises, the machine
got slower); *others / steal %* is what other processes of the machine used (100 = one core)
and the share of all cores the virtual machine's host took (steal): what a row shared its
cores with.

| preset | video | row | RSS MB | threads / fds | viewer fps | latency p50 / p95 ms | in-node p50 / p95 ms\
 | fps out | dropped / degraded | node CPU % | bench CPU % | others / steal % | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"""
RUNS_HEAD = """
| file | preset | minutes | RSS first → last MB | growth | p95 first → last ms (basis) | RSS goal | p95 goal | device, cores |
|---|---|---|---|---|---|---|---|---|"""


def tally(counts: dict[str, int] | None) -> int:
    return sum((counts or {}).values())


def node_counts(node: dict[str, Any] | None) -> str:
    window = (node or {}).get("window") or {}
    if not window:
        return MISSING
    return f"{tally(window.get('dropped'))} / {tally(window.get('degraded'))}"


def in_node(node: dict[str, Any] | None) -> dict[str, Any]:
    return (node or {}).get("node_latency_ms") or {}


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines, runs = [INTRO], [RUNS_HEAD]
    for name, r in sorted(results, key=lambda item: (item[1]["options"]["preset"], item[0])):
        o, m = r["options"], r["machine"]
        for row in r["rows"]:
            viewer, node = row["viewer"], row["node"]
            lines.append(markdown_row([
                o["preset"],
                f"{o['width']}×{o['height']} @ {o['fps']:g}",
                str(row["row"]),
                fixed(row.get("rss_mb"), 1),
                f"{plain(row.get('threads'))} / {plain(row.get('fds'))}",
                fps(viewer.get("delivered_fps")),
                pair(viewer["latency_ms"]["p50"], viewer["latency_ms"]["p95"]),
                pair(in_node(node).get("p50"), in_node(node).get("p95")),
                fps((node or {}).get("fps_out_window")),
                node_counts(node),
                plain(row["cpu"].get("node_process_pct")),
                plain(row["cpu"].get("bench_process_pct")),
                pair(row["cpu"].get("other_processes_pct"), row["cpu"].get("machine_steal_pct")),
                run_date(r),
                file_link(name),
            ]))
        rss, latency = r["verdicts"]
        runs.append(markdown_row([
            file_link(name),
            o["preset"],
            plain(o["minutes"]),
            f"{fixed(rss['rss_first_mb'], 1)} → {fixed(rss['rss_last_mb'], 1)}",
            MISSING if rss["growth_pct"] is None else f"{rss['growth_pct']:+.1f} %",
            f"{fixed(latency['p95_first_ms'])} → {fixed(latency['p95_last_ms'])} ({latency.get('basis', '?')})",
            met_text(rss["met"]),
            met_text(latency["met"]),
            f"{m.get('torch_device')}, {m.get('cores')}",
        ]))
    return "\n".join(lines + runs) + "\n"


def table(result: dict[str, Any]) -> str:
    o = result["options"]
    rows: list[tuple[str, ...]] = [("row", "RSS MB", "threads", "fds", "viewer fps", "p50 ms", "p95 ms",
                                    "in-node p50", "in-node p95", "fps out", "dropped/degraded", "node CPU %",
                                    "bench CPU %", "others %", "steal %")]
    for row in result["rows"]:
        viewer, node = row["viewer"], row["node"]
        rows.append((str(row["row"]), cell(row.get("rss_mb")), cell(row.get("threads")), cell(row.get("fds")),
                     cell(viewer.get("delivered_fps")), cell(viewer["latency_ms"]["p50"]),
                     cell(viewer["latency_ms"]["p95"]), cell(in_node(node).get("p50")),
                     cell(in_node(node).get("p95")), cell((node or {}).get("fps_out_window")), node_counts(node),
                     cell(row["cpu"].get("node_process_pct")), cell(row["cpu"].get("bench_process_pct")),
                     cell(row["cpu"].get("other_processes_pct")), cell(row["cpu"].get("machine_steal_pct"))))
    lines = [
        f"soak {o['preset']} {o['width']}x{o['height']} @ {o['fps']:g} fps: {o['minutes']:g} min, a row every"
        f" {o['seconds']:g} s after {o['warmup']:g} s warm-up; codec {result.get('codec')}",
        *aligned(rows),
    ]
    for v in result["verdicts"]:
        lines.append(f"  goal: {v['goal']}: {met_text(v['met'])}")
    return "\n".join(lines)


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    o = r["options"]
    rss, latency = r["verdicts"]
    growth = MISSING if rss["growth_pct"] is None else f"{rss['growth_pct']:+.1f} %"
    first = "minute" if o["seconds"] == 60 else f"{o['seconds']:g} s"
    return [(f"{o['preset']} {o['width']}×{o['height']}@{o['fps']:g}, {o['minutes']:g} min",
             f"node RSS {growth} after the first {first} (goal < 5 %: {met_text(rss['met'])});"
             f" {latency.get('basis', '?')} latency p95 {fixed(latency['p95_first_ms'])} →"
             f" {fixed(latency['p95_last_ms'])} ms"
             f" (goal ≤ +10 %: {met_text(latency['met'])})")]
