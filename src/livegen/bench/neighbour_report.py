"""How neighbour results read: the results README's section (a row per run: the bystander alone
and beside the noisy stream, the noisy stream, the verdicts), the table printed after a run and
the project README's row.
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import MISSING, aligned, cell, file_link, fixed, fps, markdown_row, pair, plain, run_date
from livegen.bench.verdicts import met_text

BYSTANDER, NOISY = "bystander", "noisy"

INTRO = """\
## neighbour: a stream beside a noisy one

`livegen bench neighbour`: on a node started as a subprocess, a *bystander* stream (a synthetic
camera with a delay stamp, published over WHIP at a preset, watched by one decoding viewer) is
measured alone; then a *noisy* stream is published, watched by a viewer that only counts
frames, and PATCHed live to the longest chain the node accepts (`engine.max_chain` copies of
`edges`), and the bystander is measured again. *fps out* is frames the node processed per
second over the window; *in-node* p50 / p95 is the node's own latency from arrival to the end
of processing over its last 600 frames; *latency* is publisher → viewer, from the stamp (none
at `blur`: it blurs the stamp away with the background);
dropped / degraded are the node's counters over the window. Both publishers run in the bench
process (*sent fps*): if it cannot keep up, the bystander's rate drops for the bench's sake.
Goal: beside the noisy stream the bystander keeps ≥ 90 % of its fps and an in-node p95
≤ 110 % of alone.

| preset | video | noisy chain | bystander fps out alone / beside | sent fps alone / beside\
 | in-node p50 / p95 ms alone | in-node p50 / p95 ms beside | latency p95 ms alone / beside\
 | bystander dropped / degraded beside | noisy fps out | noisy in-node p95 ms | noisy dropped / degraded\
 | node CPU % alone / beside | fps goal | p95 goal | device, cores | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"""


def _node(phase: dict[str, Any], stream: str) -> dict[str, Any]:
    return ((phase.get(stream) or {}).get("node")) or {}


def _latency(node: dict[str, Any]) -> dict[str, Any]:
    return node.get("node_latency_ms") or {}


def counts(node: dict[str, Any]) -> str:
    window = node.get("window") or {}
    if not window:
        return MISSING
    return f"{sum((window.get('dropped') or {}).values())} / {sum((window.get('degraded') or {}).values())}"


def chain_text(r: dict[str, Any]) -> str:
    chain = r.get("noisy_chain") or {}
    return f"{chain.get('length', '?')} × {chain.get('effect', '?')}"


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [INTRO]
    for name, r in sorted(results, key=lambda item: (item[1]["options"]["preset"], item[0])):
        o, m, alone, beside = r["options"], r["machine"], r["alone"], r["beside"]
        a, b, noisy = _node(alone, BYSTANDER), _node(beside, BYSTANDER), _node(beside, NOISY)
        fps_goal, p95_goal = r["verdicts"]
        lines.append(markdown_row([
            o["preset"],
            f"{o['width']}×{o['height']} @ {o['fps']:g}",
            chain_text(r),
            pair(a.get("fps_out_window"), b.get("fps_out_window"), fps),
            pair(alone[BYSTANDER].get("sent_fps"), beside[BYSTANDER].get("sent_fps"), fps),
            pair(_latency(a).get("p50"), _latency(a).get("p95")),
            pair(_latency(b).get("p50"), _latency(b).get("p95")),
            pair(alone[BYSTANDER]["viewer"]["latency_ms"]["p95"], beside[BYSTANDER]["viewer"]["latency_ms"]["p95"]),
            counts(b),
            fps(noisy.get("fps_out_window")),
            fixed(_latency(noisy).get("p95")),
            counts(noisy),
            pair(alone["cpu"].get("node_process_pct"), beside["cpu"].get("node_process_pct"), plain),
            met_text(fps_goal["met"]),
            met_text(p95_goal["met"]),
            f"{m.get('torch_device')}, {m.get('cores')}",
            run_date(r),
            file_link(name),
        ]))
    return "\n".join(lines) + "\n"


def table(result: dict[str, Any]) -> str:
    o, alone, beside = result["options"], result["alone"], result["beside"]
    rows: list[tuple[str, ...]] = [("", "bystander alone", "bystander beside", "noisy beside")]
    phases = ((alone, BYSTANDER), (beside, BYSTANDER), (beside, NOISY))

    def line(label: str, pick) -> tuple[str, ...]:
        return (label, *(pick(phase.get(stream) or {}) for phase, stream in phases))

    rows.append(line("sent fps", lambda s: cell(s.get("sent_fps"))))
    rows.append(line("node fps out", lambda s: cell((s.get("node") or {}).get("fps_out_window"))))
    rows.append(line("viewer fps", lambda s: cell((s.get("viewer") or {}).get("delivered_fps"))))
    rows.append(line("in-node p50 ms", lambda s: cell(_latency(s.get("node") or {}).get("p50"))))
    rows.append(line("in-node p95 ms", lambda s: cell(_latency(s.get("node") or {}).get("p95"))))
    rows.append(line("processing p95 ms", lambda s: cell(((s.get("node") or {}).get("latency_ms") or {}).get("p95"))))
    rows.append(line("latency p95 ms", lambda s: cell(((s.get("viewer") or {}).get("latency_ms") or {}).get("p95"))))
    rows.append(line("dropped / degraded", lambda s: counts(s.get("node") or {})))
    rows.append(("node CPU %", cell(alone["cpu"].get("node_process_pct")),
                 cell(beside["cpu"].get("node_process_pct")), ""))
    rows.append(("bench CPU %", cell(alone["cpu"].get("bench_process_pct")),
                 cell(beside["cpu"].get("bench_process_pct")), ""))
    lines = [
        f"neighbour {o['preset']} {o['width']}x{o['height']} @ {o['fps']:g} fps: {o['seconds']:g} s per phase"
        f" after {o['warmup']:g} s warm-up; noisy chain {chain_text(result)}; codec {result.get('codec')}",
        *aligned(rows),
    ]
    load = _node(beside, BYSTANDER).get("load")
    if load:
        lines.append(f"  bystander's load beside the noisy stream: {load}")
    for v in result["verdicts"]:
        lines.append(f"  goal: {v['goal']}: {met_text(v['met'])}")
    return "\n".join(lines)


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    o = r["options"]
    fps_goal, p95_goal = r["verdicts"]
    return [(f"{o['preset']} {o['width']}×{o['height']}@{o['fps']:g} beside {chain_text(r)}",
             f"bystander fps {fps(fps_goal['alone'])} → {fps(fps_goal['beside'])} (goal ≥ 90 %:"
             f" {met_text(fps_goal['met'])}), in-node p95 {fixed(p95_goal['alone_ms'])} →"
             f" {fixed(p95_goal['beside_ms'])} ms (goal ≤ 110 %: {met_text(p95_goal['met'])})")]
