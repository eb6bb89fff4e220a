"""How relay results read: the results README's section (a row per step, a summary row per run),
the table printed after a run and the rows of the project README's table.
"""

from __future__ import annotations

import statistics
from typing import Any

from livegen.bench.cells import MISSING, aligned, cell, file_link, fixed, fps, markdown_row, pair, plain, run_date

INTRO = """\
## relay: RTMP outputs and a recording

`livegen bench relay`: a synthetic camera (with the delay stamp) and microphone are published over
WHIP to a node started as a subprocess; the bench starts nginx-rtmp on 127.0.0.1 and adds RTMP
outputs to it in steps, each to its own stream key, then a recording on top of the most outputs.
Each step is measured after its outputs are live and a warm-up. The video is encoded once per
stream and the audio once to AAC, whatever the number of outputs; neither encoder runs without
an output, so the first output also starts them for all. *node CPU* is the node process's CPU
time over the window in percent of one core (nginx's and the bench's beside it: the bench
encodes the published video and decodes the played one). *per output* is the least-squares
slope of node CPU over the steps with outputs; *shared* is what the first output added beyond
that (the encoders it started); *recording* is the recording step's node CPU minus the same
outputs' without it. *kbit/s* is what one output sent over the window (the median of the
outputs), as the node's API counts it. Latency is publisher → node → nginx → player: a PyAV
player in the bench reads the first output back from nginx, decodes it and reads each frame's
stamp (one process, one monotonic clock). The machine is shared: compare numbers within one run.
"""
STEPS_HEAD = """\
| preset | video | s | step | sent fps | node fps in / out | node CPU % | nginx CPU % | bench CPU %\
 | outputs live | kbit/s per output | recording kbit/s | played fps | p50 / p95 ms | device, cores\
 | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"""
RUNS_HEAD = """
| file | node CPU % per output | between steps | shared by the first output | recording\
 | publisher → player p50 / p95 ms | goal: ≤ 5 % of a core per output |
|---|---|---|---|---|---|---|"""


def step_name(outputs: int, recording: bool) -> str:
    """What a step measured: "3 outputs + recording"."""
    return f"{outputs} output{'s' * (outputs != 1)}" + (" + recording" if recording else "")


def output_kbps(step: dict[str, Any]) -> float | None:
    """What one output sent over the window: the median of the step's outputs."""
    rates = [o["kbps"] for o in step["output_stats"] if o.get("kbps") is not None]
    return round(statistics.median(rates), 1) if rates else None


def recording_kbps(step: dict[str, Any]) -> float | None:
    return (step.get("recording_stats") or {}).get("kbps")


def node_fps(step: dict[str, Any]) -> tuple[float | None, float | None]:
    node = step.get("node") or {}
    return node.get("fps_in"), node.get("fps_out")


def latency(step_or_result: dict[str, Any], key: str) -> float | None:
    return ((step_or_result.get("player") or {}).get("latency_ms") or {}).get(key)


def live(step: dict[str, Any]) -> str:
    return f"{step['outputs_live']}/{step['outputs']}"


def by_step(result: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {plain(v)}" for k, v in result["cpu_per_output_by_step_pct"].items()) or MISSING


def goal_met(result: dict[str, Any], yes: str = "yes", no: str = "no") -> str:
    met = result["goal"]["met"]
    return MISSING if met is None else yes if met else no


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [INTRO, STEPS_HEAD]
    runs = [RUNS_HEAD]
    for name, r in sorted(results, key=lambda item: (item[1]["options"]["preset"], item[0])):
        o, m = r["options"], r["machine"]
        for step in r["steps"]:
            cpu = step["cpu"]
            lines.append(markdown_row([
                o["preset"],
                f"{o['width']}×{o['height']} @ {o['fps']:g}",
                f"{o['seconds']:g}",
                step_name(step["outputs"], step["recording"]),
                fps(step["sent_fps"]),
                pair(*node_fps(step), fps),
                plain(cpu.get("node_process_pct")),
                plain(cpu.get("nginx_process_pct")),
                plain(cpu.get("bench_process_pct")),
                live(step),
                fixed(output_kbps(step)),
                fixed(recording_kbps(step)),
                fps((step.get("player") or {}).get("delivered_fps")),
                pair(latency(step, "p50"), latency(step, "p95")),
                f"{m.get('torch_device')}, {m.get('cores')}",
                run_date(r),
                file_link(name),
            ]))
        runs.append(markdown_row([
            file_link(name),
            plain(r["cpu_per_output_pct"]),
            by_step(r),
            plain(r["cpu_shared_by_outputs_pct"]),
            plain(r["cpu_recording_pct"]),
            pair(latency(r, "p50"), latency(r, "p95")),
            f"{goal_met(r)} ({plain(r['cpu_per_output_pct'])} %)",
        ]))
    return "\n".join(lines + runs) + "\n"


def table(result: dict[str, Any]) -> str:
    o = result["options"]
    rows: list[tuple[str, ...]] = [
        ("step", "sent fps", "node fps in", "node fps out", "node CPU %", "nginx CPU %", "bench CPU %",
         "machine %", "live", "kbit/s per output", "dropped", "recording kbit/s", "played fps", "p50 ms", "p95 ms"),
    ]
    for step in result["steps"]:
        cpu = step["cpu"]
        dropped = sum(s.get("packets_dropped_in_window") or 0 for s in step["output_stats"])
        rows.append((
            step_name(step["outputs"], step["recording"]), cell(step["sent_fps"]), *(cell(v) for v in node_fps(step)),
            cell(cpu.get("node_process_pct")), cell(cpu.get("nginx_process_pct")),
            cell(cpu.get("bench_process_pct")), cell(cpu.get("machine_busy_pct")), live(step),
            cell(output_kbps(step)), str(dropped), cell(recording_kbps(step)),
            cell((step.get("player") or {}).get("delivered_fps")),
            cell(latency(step, "p50")), cell(latency(step, "p95")),
        ))
    player, goal = result.get("player") or {}, result["goal"]
    return "\n".join([
        f"relay {o['preset']} {o['width']}x{o['height']} @ {o['fps']:g} fps: {o['seconds']:g} s measured per step"
        f" after {o['warmup']:g} s warm-up; {result.get('codec')}",
        *aligned(rows),
        f"  node CPU per RTMP output (least squares over the steps with outputs): {plain(result['cpu_per_output_pct'])}"
        f" % of one core (between steps: {by_step(result)}; over every step:"
        f" {plain(result['cpu_per_output_all_steps_pct'])} %)",
        f"  shared by the outputs (the encoders the first one starts): {plain(result['cpu_shared_by_outputs_pct'])} %;"
        f" a recording adds {plain(result['cpu_recording_pct'])} %",
        f"  latency publisher → node → nginx → player over {player.get('frames_received', 0)} frames:"
        f" p50 {cell(latency(result, 'p50'))}, p95 {cell(latency(result, 'p95'))},"
        f" p99 {cell(latency(result, 'p99'))} ms; undecodable stamps {player.get('frames_undecodable', MISSING)}",
        f"  goal ({goal['target']}): {goal_met(result, 'met', 'not met')} ({plain(goal['cpu_per_output_pct'])} %)",
    ])


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    o, last = r["options"], r["steps"][-1]
    case = step_name(last["outputs"], last["recording"])
    return [(f"{o['preset']} {o['width']}×{o['height']}@{o['fps']:g}, {case}",
             f"{plain(r['cpu_per_output_pct'])} % of a core per RTMP output (goal ≤ 5 %), a recording adds"
             f" {plain(r['cpu_recording_pct'])} %; publisher→nginx→player"
             f" {fixed(latency(r, 'p50'))} / {fixed(latency(r, 'p95'))} ms p50 / p95")]
