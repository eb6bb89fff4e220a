"""How process results read: the progress lines, the table printed after a run, the results
README's section and the rows of the project README's table.
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import (
    MISSING,
    file_link,
    fixed,
    fps,
    markdown_row,
    pair,
    plain,
    run_date,
)
from livegen.bench.verdicts import met_text, verdicts_text

INTRO = """\
## process: files through the engine, and a live stream beside a file job

`livegen bench process`: a clip (the pipeline bench's person scene, H.264 with a stereo AAC
tone) is processed with each preset by `process_file` on a real device worker, as `livegen
process` does: decode thread → job lane → encode thread, every frame kept, the audio copied.
*real time* is seconds of video per second of processing; *stages* are mean ms per frame
(decode and `to_rgb` on the decode thread; the worker's own conversions and effects; `to_yuv`
and `encode` on the encode thread); *CPU* is the bench process in percent of one core.
Then a live stream is fed frames at the nominal rate on the same worker, alone and while a file
job runs: its fps out, processing and in-node p95 (ms), and the job's fps beside it.

| presets: real time × (fps) | stages ms (first preset) | CPU % | live: fps alone / beside\
 | live processing p95 alone / beside | live in-node p95 alone / beside | job fps beside live\
 | goals | device, cores | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|"""


def realtime(r: dict[str, Any]) -> str:
    return f"{fixed(r.get('realtime'), 2)}× ({fps(r.get('fps'))} fps)"


def stages(r: dict[str, Any]) -> str:
    return ", ".join(f"{name} {fixed(ms, 1)}" for name, ms in (r.get("stages_ms") or {}).items()) or MISSING


def file_line(r: dict[str, Any]) -> str:
    return (f"    {r['frames']} frames in {r['wall_s']:.1f} s: {r['fps']:.1f} fps, {r['realtime']}× real time, "
            f"{r['output_mbit_s']} Mbit/s out, CPU {r['cpu'].get('bench_process_pct')} %\n"
            f"    stages ms/frame: {stages(r)}")


def live_line(phase: dict[str, Any]) -> str:
    job = f", file job {phase['job_fps']:.1f} fps" if phase.get("job_fps") is not None else ""
    return (f"    fps {phase['fps_out']:.1f} of {phase['fps_offered']}, processing p50/p95 "
            f"{fixed(phase['processing_ms']['p50'], 1)}/{fixed(phase['processing_ms']['p95'], 1)} ms, in-node p50/p95 "
            f"{fixed(phase['node_ms']['p50'], 1)}/{fixed(phase['node_ms']['p95'], 1)} ms, "
            f"dropped {phase['dropped'] or 'none'}{job}")


def _verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["goal"], *((r.get("live") or {}).get("verdicts") or [])]


def table(result: dict[str, Any]) -> str:
    lines = []
    for name, r in result["files"].items():
        lines.append(f"  {name}: {realtime(r)}, {r['frames']} frames in {fixed(r['wall_s'], 1)} s")
        lines.append(f"    stages ms/frame: {stages(r)}")
    live = result.get("live")
    if live:
        a, b = live["alone"], live["beside"]
        lines.append(f"  live {live['preset']} alone / beside a {live['job_preset']} job: "
                     f"fps {pair(a['fps_out'], b['fps_out'], fps)}, processing p95 "
                     f"{pair(a['processing_ms']['p95'], b['processing_ms']['p95'], plain)} ms, in-node p95 "
                     f"{pair(a['node_ms']['p95'], b['node_ms']['p95'], plain)} ms; job {fps(b.get('job_fps'))} fps")
    for v in _verdicts(result):
        lines.append(f"  goal {v['goal']}: {met_text(v.get('met'))}")
    return "\n".join(lines)


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [INTRO]
    for name, r in results:
        m, files = r["machine"], r["files"]
        first = next(iter(files.values()))
        live = r.get("live") or {}
        a, b = live.get("alone") or {}, live.get("beside") or {}

        def p95(phase: dict[str, Any], key: str) -> float | None:
            return (phase.get(key) or {}).get("p95")

        lines.append(markdown_row([
            "; ".join(f"{preset} {realtime(f)}" for preset, f in files.items()),
            stages(first),
            str(first["cpu"].get("bench_process_pct")),
            pair(a.get("fps_out"), b.get("fps_out"), fps) if live else MISSING,
            pair(p95(a, "processing_ms"), p95(b, "processing_ms"), plain) if live else MISSING,
            pair(p95(a, "node_ms"), p95(b, "node_ms"), plain) if live else MISSING,
            fps(b.get("job_fps")) if live else MISSING,
            verdicts_text(_verdicts(r)),
            f"{m.get('torch_device')}, {m.get('cores')}",
            run_date(r),
            file_link(name),
        ]))
    return "\n".join(lines) + "\n"


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    o, rows = r["options"], []
    video = f"{o['width']}×{o['height']}@{o['fps']:g}"
    for preset, f in r["files"].items():
        rows.append((f"file {preset} {video}", f"{realtime(f)}"))
    goal = r["goal"]
    rows[0] = (rows[0][0], f"{rows[0][1]} (goal ≥ 2×: {met_text(goal.get('met'))})")
    live = r.get("live")
    if live:
        a, b = live["alone"], live["beside"]
        rows.append((f"live {live['preset']} {video} beside a {live['job_preset']} file job",
                     f"fps {pair(a['fps_out'], b['fps_out'], fps)}, in-node p95 "
                     f"{pair(a['node_ms']['p95'], b['node_ms']['p95'], plain)} ms "
                     f"({verdicts_text(live['verdicts'])})"))
    return rows
