"""How fanout results read: the results README's section (a row per step, a summary row per
run), the table printed after a run and the rows of the project README's table.
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import aligned, cell, file_link, fixed, fps, markdown_row, pair, plain, ratio, run_date
from livegen.bench.encoding import encoder_text

INTRO = """\
## fanout: one publisher, many viewers

`livegen bench fanout`: a synthetic camera is published over WHIP to a node started as a
subprocess; viewers join over WHEP in steps, and each step is measured after a warm-up. The
whole ladder runs twice in one run, each on a fresh node: `output.mode: encode_once` (one
encoder per stream, packets fanned out) and `per_viewer` (an encoder per viewer, with the same
settings: x264 preset, tune, profile and fixed bitrate; *encoders* names what each mode ran, as
the node reported it, and a run whose modes differed says so).
*sent fps* is what the publisher (in the bench process) managed to send; *fps* is frames
delivered per viewer per second (min / median over the viewers); full rate means ≥ 95 % of the
nominal rate. *node CPU* is the node process's CPU time over the window in percent of one
core; *per 10 viewers* is the least-squares slope of node CPU over the viewer count. Latency is
read from the stamp at the one viewer that decodes; every other viewer counts frames from RTP
marker bits without decoding (it still sends receiver reports), so the bench's own CPU (*bench
CPU*, in brackets its event-loop thread, which receives every viewer's packets) stays far below
what decoding viewers would cost; it still grows with the packet rate, as the node's does.
*kbit/s* is the video payload one counting viewer receives: a node's cost per viewer is per
packet, so compare CPU per viewer at like bitrates. Drops /
resyncs / keyframes are the node's output counters over the window (packets dropped from
viewer queues plus frames replaced in per-viewer mailboxes, skips to a keyframe, keyframes
forced); frames the node dropped before encoding are in the JSON (`node_stats.window.dropped`).
The machine is shared: compare numbers within one run.
"""
STEPS_HEAD = """\
| preset | video | s | mode | viewers | sent fps | fps min / median | p50 / p95 ms | node CPU %\
 | bench CPU % (loop) | kbit/s per viewer | drops / resyncs / keyframes | device, cores | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"""
RUNS_HEAD = """
| file | encoders | node CPU % per 10 viewers, encode_once / per_viewer | encode_once by step\
 | per_viewer by step | bench CPU % per 10 viewers | node CPU encode_once ÷ per_viewer\
 | goal: 50 viewers at full rate, ≤ 10 % per 10 |
|---|---|---|---|---|---|---|---|"""


def output_counts(step: dict[str, Any]) -> str:
    """The node's output drops / resyncs / forced keyframes over a step's window."""
    stats = step.get("node_stats") or {}
    out = (stats.get("window") or {}).get("output") or {}
    dropped = (out.get("viewer_packets_dropped") or 0) + (out.get("viewer_frames_dropped") or 0)
    if not out:
        return "–"
    return f"{dropped} / {out.get('viewer_resyncs', 0)} / {out.get('keyframes_forced', 0)}"


def viewers(step: dict[str, Any]) -> str:
    """How many viewers a step measured, and of how many asked for when some did not connect."""
    requested = step.get("viewers_requested", step["viewers"])
    return str(step["viewers"]) if step["viewers"] == requested else f"{step['viewers']} of {requested}"


def encoders(r: dict[str, Any]) -> str:
    """What each mode's encoder ran: one text when they matched, both and a warning when not;
    results from before it was recorded ran aiortc's own encoder settings in per_viewer mode."""
    once, each = r["modes"]["encode_once"].get("encoder"), r["modes"]["per_viewer"].get("encoder")
    like = r.get("like_for_like")
    if like:
        return f"both {encoder_text(once)}"
    if like is None and not once and not each:
        return "not recorded (per_viewer: aiortc's own encoder settings, not like for like)"
    return f"encode_once {encoder_text(once)}, per_viewer {encoder_text(each)} (not like for like)"


def by_step(numbers: dict[str, Any]) -> str:
    steps = numbers.get("cpu_per_10_viewers_by_step_pct") or {}
    return ", ".join(f"{k}: {plain(v)}" for k, v in steps.items()) or "–"


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [INTRO, STEPS_HEAD]
    runs = [RUNS_HEAD]
    for name, r in sorted(results, key=lambda item: (item[1]["options"]["preset"], item[0])):
        o, m, modes = r["options"], r["machine"], r["modes"]
        for mode, numbers in modes.items():
            for step in numbers["steps"]:
                cpu, lat = step["cpu"], step["latency_ms"]
                lines.append(markdown_row([
                    o["preset"],
                    f"{o['width']}×{o['height']} @ {o['fps']:g}",
                    f"{o['seconds']:g}",
                    mode,
                    viewers(step),
                    fps(step["sent_fps"]),
                    pair(step["fps_per_viewer"]["min"], step["fps_per_viewer"]["median"], fps),
                    pair(lat["p50"], lat["p95"]),
                    plain(cpu.get("node_process_pct")),
                    f"{plain(cpu.get('bench_process_pct'))} ({plain(cpu.get('bench_loop_pct'))})",
                    fixed((step.get("counting_viewer_kbps") or {}).get("median")),
                    output_counts(step),
                    f"{m.get('torch_device')}, {m.get('cores')}",
                    run_date(r),
                    file_link(name),
                ]))
        once, each, goal = modes["encode_once"], modes["per_viewer"], r["goal"]
        ratios = ", ".join(f"×{n}: {ratio(v)}" for n, v in r["cpu_ratio_once_to_per_viewer"].items())
        runs.append(markdown_row([
            file_link(name),
            encoders(r),
            pair(once["cpu_per_10_viewers_pct"], each["cpu_per_10_viewers_pct"], plain),
            by_step(once),
            by_step(each),
            pair(once["bench_cpu_per_10_viewers_pct"], each["bench_cpu_per_10_viewers_pct"], plain),
            ratios,
            f"full rate {'yes' if goal['full_rate_met'] else 'no'}"
            f" ({goal['viewers_at_full_rate']} of {goal['viewers_measured']}),"
            f" CPU {'yes' if goal['cpu_met'] else 'no'}",
        ]))
    return "\n".join(lines + runs) + "\n"


def table(result: dict[str, Any]) -> str:
    o, modes = result["options"], result["modes"]
    rows: list[tuple[str, ...]] = [
        ("mode", "viewers", "sent fps", "fps min", "fps median", "p50 ms", "p95 ms", "node CPU %",
         "bench CPU %", "bench loop %", "decoder %", "machine %", "kbit/s", "drops/resyncs/keyframes",
         "encode p50 ms"),
    ]
    for mode, numbers in modes.items():
        for step in numbers["steps"]:
            cpu, rate, lat = step["cpu"], step["fps_per_viewer"], step["latency_ms"]
            end = (step.get("node_stats") or {}).get("end") or {}
            encode = ((end.get("output") or {}).get("encode_ms") or {}).get("p50")
            rows.append((
                mode, viewers(step), cell(step["sent_fps"]), cell(rate["min"]), cell(rate["median"]),
                cell(lat["p50"]), cell(lat["p95"]), cell(cpu.get("node_process_pct")),
                cell(cpu.get("bench_process_pct")), cell(cpu.get("bench_loop_pct")),
                cell(cpu.get("decoder_thread_pct")), cell(cpu.get("machine_busy_pct")),
                cell((step.get("counting_viewer_kbps") or {}).get("median")),
                output_counts(step), cell(encode) if mode == "encode_once" else "–",
            ))
    once, each = modes["encode_once"], modes["per_viewer"]
    ratios = ", ".join(f"×{n} {ratio(v)}" for n, v in result["cpu_ratio_once_to_per_viewer"].items())
    goal = result["goal"]

    return "\n".join([
        f"fanout {o['preset']} {o['width']}x{o['height']} @ {o['fps']:g} fps: {o['seconds']:g} s measured per step"
        f" after {o['warmup']:g} s warm-up; codec {once.get('codec')}",
        f"  encoders: {encoders(result)}",
        *aligned(rows),
        f"  node CPU per 10 extra viewers (least squares): encode_once {plain(once['cpu_per_10_viewers_pct'])} %"
        f" ({by_step(once)}), per_viewer {plain(each['cpu_per_10_viewers_pct'])} % ({by_step(each)})",
        f"  bench CPU per 10 extra (counting) viewers: encode_once {plain(once['bench_cpu_per_10_viewers_pct'])} %,"
        f" per_viewer {plain(each['bench_cpu_per_10_viewers_pct'])} %",
        f"  node CPU encode_once ÷ per_viewer: {ratios}",
        f"  goal ({goal['target']}): full rate {'met' if goal['full_rate_met'] else 'not met'}"
        f" ({goal['viewers_at_full_rate']} of {goal['viewers_measured']} viewers),"
        f" CPU {'met' if goal['cpu_met'] else 'not met'} ({plain(goal['cpu_per_10_viewers_pct'])} % per 10)",
    ])


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    once = r["modes"]["encode_once"]
    last = once["steps"][-1]
    each = r["modes"].get("per_viewer", {}).get("steps", [{}])[-1]
    return [(f"{r['options']['preset']}, {viewers(last)} viewers",
             f"encode-once {fps(last['fps_per_viewer']['median'])} fps per viewer, "
             f"{plain(once['cpu_per_10_viewers_pct'])} % of a core per 10 viewers; per-viewer encoding "
             f"{fps((each.get('fps_per_viewer') or {}).get('median'))} fps; encoders {encoders(r)}")]
