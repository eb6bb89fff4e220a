"""How pipeline results read: a preset's progress line, the table printed after a run, the
results README's section and the rows of the project README's table.
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import file_link, fixed, fps, markdown_row, run_date
from livegen.bench.degradation import frames_text, shares_from_counts

INTRO = """\
## pipeline: the engine in-process, per preset

`livegen bench pipeline`: a person scene (the astronaut portrait over a room-like background,
swaying, with camera noise) is offered to a real device worker at the nominal rate, one preset
after another; times are the worker's own per frame (each effect, the conversions, total).
*CPU* is the whole bench process (worker, CPU pool, pacing) in percent of one core.
*frames* says what happened to the frames: the share that showed an effect's fallback instead
of its work (e.g. the `generated` background's blur without a diffusion model or device, and
why), that were degraded to keep up (a reused mask, a lower resolution) or took longer than
the engine's per-frame budget; *notes* counts the engine's notes by name. A row that says
nothing there had every frame fully processed.

| preset | effects | video | fps out | total p50 / p95 / p99 ms | stages p95 ms | dropped | frames\
 | notes | CPU % | device, cores | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|---|---|"""


def ms(value: float | None) -> str:
    return fixed(value, 1)


def counts(counted: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counted.items()) or "none"


def frames_said(p: dict[str, Any]) -> str | None:
    """What happened to a preset's frames (`degradation.frames_text`), None when all were clean.
    Results from before per-frame shares were recorded are read from their note counts."""
    notes = p.get("degraded") or {}
    shares = p.get("frame_shares")
    if shares is None:
        shares = shares_from_counts(notes, p.get("frames_out") or 0)
    fallback = p.get("fallback") or {}
    return frames_text(shares, notes, shows=fallback.get("shows"), cause=fallback.get("cause"),
                   over_budget=shares.get("over_budget", 0.0))


def goal_verdict(goal: dict[str, Any]) -> str:
    return f"({goal['preset']}: {goal['target']}): {'met' if goal['met'] else 'not met'}"


def preset_line(r: dict[str, Any]) -> str:
    """One preset's numbers, printed as it finishes."""
    p = r["processing_ms"]
    return (f"    fps {r['fps_out']:.1f} of {r['fps_offered']}, processing p50/p95/p99 "
            f"{ms(p['p50'])}/{ms(p['p95'])}/{ms(p['p99'])} ms, dropped {r['dropped'] or 'none'}, "
            f"frames: {frames_said(r) or 'all fully processed'}, CPU {r['cpu'].get('bench_process_pct')} %")


def table(result: dict[str, Any]) -> str:
    lines = []
    for name, r in result["presets"].items():
        said = frames_said(r)
        lines.append(f"  {name} ({' → '.join(r['effects'])}): fps {r['fps_out']:.1f}" + (f" — {said}" if said else ""))
        lines.append(f"    {'stage':<14}{'p50':>8}{'p95':>8}{'p99':>8}  ms")
        for stage, q in [*r["stages_ms"].items(), ("total", r["processing_ms"])]:
            lines.append(f"    {stage:<14}{ms(q['p50']):>8}{ms(q['p95']):>8}{ms(q['p99']):>8}")
    goal = result["goal"]
    if goal["met"] is not None:
        lines.append(f"  goal {goal_verdict(goal)}")
    return "\n".join(lines)


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [INTRO]
    for name, r in results:
        o, m = r["options"], r["machine"]
        for preset, p in r["presets"].items():
            q = p["processing_ms"]
            lines.append(markdown_row([
                preset, " → ".join(p["effects"]), f"{o['width']}×{o['height']} @ {o['fps']:g}",
                f"{p['fps_out']:.1f}", f"{ms(q['p50'])} / {ms(q['p95'])} / {ms(q['p99'])}",
                ", ".join(f"{s} {ms(v['p95'])}" for s, v in p["stages_ms"].items()),
                counts(p["dropped"]), frames_said(p) or "all fully processed", counts(p["degraded"]),
                str(p["cpu"].get("bench_process_pct")), f"{m.get('torch_device')}, {m.get('cores')}",
                run_date(r), file_link(name),
            ]))
        goal = r.get("goal") or {}
        if goal.get("met") is not None:
            lines += ["", f"Goal {goal_verdict(goal)} in {file_link(name)}."]
    return "\n".join(lines) + "\n"


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """A row per preset; a preset whose frames fell back or were degraded says so right after
    its frame rate, so a fallback's speed never reads as the effect's."""
    o, rows = r["options"], []
    for preset, p in r["presets"].items():
        q = p["processing_ms"]
        said = frames_said(p)
        dropped = sum((p.get("dropped") or {}).values())
        rows.append((f"{preset} {o['width']}×{o['height']}@{o['fps']:g}",
                     f"{fps(p['fps_out'])} fps{f' — {said}' if said else ''}; processing p50 / p95 / p99 "
                     f"{fixed(q['p50'])} / {fixed(q['p95'])} / {fixed(q['p99'])} ms"
                     + (f"; dropped {counts(p['dropped'])}" if dropped else "")))
    return rows
