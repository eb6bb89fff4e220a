"""How diffusion results read: a case's progress line, the results README's section and the
rows of the project README's table.
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import file_link, fixed, fps, markdown_row, run_date

INTRO = """\
## diffusion: the diffusion stage's parts

`livegen bench diffusion`: random-weight models of the named architecture (latency does not
depend on weights); per case one engine flush per frame for all streams (the stream batch: one
UNet call per frame). The device is synchronised between parts; total is their sum per frame.
`tiny` rows check the code path on a CPU and say nothing about speed.

| architecture | mode (path) | size | steps | streams | total p50 / p95 ms | UNet p50 | TAESD enc / dec p50\
 | upload / composite / download p50 | fps per stream | device | date (UTC) | file |
|---|---|---|---|---|---|---|---|---|---|---|---|---|"""


def ms(value: float | None) -> str:
    return fixed(value, 2)


def case_line(case: dict[str, Any]) -> str:
    """One case's numbers, printed as it finishes."""
    p = case["parts_ms"]
    parts = ", ".join(f"{k} {ms(v['p50'])}" for k, v in p.items() if k != "total")
    return (f"{case['size']} {case['steps']} step(s) ×{case['streams']}: total p50/p95 "
            f"{ms(p['total']['p50'])}/{ms(p['total']['p95'])} ms, {case['fps_per_stream']:.1f} fps per stream"
            f" ({parts})")


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [INTRO]
    for name, r in results:
        m = r["machine"]
        for c in r["cases"]:
            p = c["parts_ms"]
            lines.append(markdown_row([
                r["architecture"] + ("" if r.get("controlnet", "none") == "none" else f" + {r['controlnet']} ControlNet"), f"{c['mode']} ({c['path']})", c["size"], str(c["steps"]), str(c["streams"]),
                f"{ms(p['total']['p50'])} / {ms(p['total']['p95'])}", ms(p["unet"]["p50"]),
                f"{ms(p['taesd_encode']['p50'])} / {ms(p['taesd_decode']['p50'])}",
                f"{ms(p['upload']['p50'])} / {ms(p['composite']['p50'])} / {ms(p['download']['p50'])}",
                f"{c['fps_per_stream']:.1f}", m.get("gpu") or m.get("cpu") or "?",
                run_date(r), file_link(name),
            ]))
        skipped = [f"{mode}: {info['skipped']}" for mode, info in r["modes"].items() if "skipped" in info]
        if skipped:
            lines += ["", f"Skipped in {file_link(name)}: " + "; ".join(skipped) + "."]
        for timing in r.get("prompt_changes") or []:
            lines += ["", f"Prompt change ({timing['mode']}, {timing['size']}, {timing['steps']} step(s)) in "
                      f"{file_link(name)}: p50 {timing['ms']['p50']} ms, max {timing['ms']['max']} ms from the "
                      f"new prompt to the first frame made with it, over {timing['changes']} changes."]
        if r.get("skipped_over_budget"):
            lines += ["", f"Over the time budget in {file_link(name)}, not run: "
                      + "; ".join(r["skipped_over_budget"]) + "."]
        goal = r.get("goal") or {}
        targets = goal.get("targets") or {}  # as the run was judged, even if the goals move on
        judged = [(key, goal.get(f"{key}_met")) for key in ("single", "four", "eight", "prompt")]
        verdicts = [f"{targets[key]}: {'met' if met else 'not met'}" for key, met in judged
                    if met is not None and key in targets]
        if verdicts:
            lines += ["", f"Goals in {file_link(name)}: " + "; ".join(verdicts) + "."]
    return "\n".join(lines) + "\n"


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for case in r.get("cases", []):
        if case.get("streams") not in (1, 4, 8) or case.get("skipped"):
            continue
        total = (case.get("parts_ms") or {}).get("total") or {}
        control = "" if r.get("controlnet", "none") == "none" else f" + {r['controlnet']}"
        rows.append((f"{r.get('architecture')}{control} {case['mode']} {case['size']}, {case['steps']} step(s), "
                     f"{case['streams']} stream(s)",
                     f"{fps(case.get('fps_per_stream'))} fps per stream; p50 / p95 {fixed(total.get('p50'))} / "
                     f"{fixed(total.get('p95'))} ms"))
    return rows
