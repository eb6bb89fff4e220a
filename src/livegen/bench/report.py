"""Bench results on disk: the JSON file of a run, the results folder's README (one section per
scenario, regenerated from every JSON file there), the project README's performance table, and
how two results of any scenario differ.

Files carry no machine paths, so they can be committed and compared in git. How each
scenario's results read lives beside it (`e2e_report`, `fanout_report`, …); how two results
differ is `comparison`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from livegen.bench import (
    diffusion_report,
    e2e_report,
    fanout_report,
    neighbour_report,
    overload_report,
    pipeline_report,
    process_report,
    relay_report,
    soak_report,
)
from livegen.bench.machine import machine_info, utc_now

log = logging.getLogger(__name__)

SCHEMA = 1
README = "README.md"
README_TITLE = (
    "# Benchmark results\n\n"
    "Written by `livegen bench`; each scenario regenerates its own section from the JSON files here.\n"
)
SUMMARIES = {  # the project README's table, scenario by scenario in this order
    "e2e": e2e_report.summary_rows,
    "fanout": fanout_report.summary_rows,
    "relay": relay_report.summary_rows,
    "pipeline": pipeline_report.summary_rows,
    "diffusion": diffusion_report.summary_rows,
    "neighbour": neighbour_report.summary_rows,
    "overload": overload_report.summary_rows,
    "soak": soak_report.summary_rows,
    "process": process_report.summary_rows,
}


# ---- files ------------------------------------------------------------------------------------
def result_head(scenario: str, command: str, options: dict[str, Any], device: str | None) -> dict[str, Any]:
    """The fields every result starts with: what ran, with which options, when, on what."""
    return {
        "scenario": scenario,
        "schema": SCHEMA,
        "date_utc": utc_now(),
        "command": command,
        "options": options,
        "machine": machine_info(device),
    }


def result_name(result: dict[str, Any]) -> str:
    options = result["options"]
    preset = re.sub(r"[^A-Za-z0-9_.-]", "_", options["preset"])
    return f"{result['scenario']}-{preset}-{options['width']}x{options['height']}.json"


def write_result(result: dict[str, Any], folder: Path, name: str | None = None) -> Path:
    """`result` as JSON in `folder`, named `name` (default: scenario, preset and size)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or result_name(result))
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def load_results(folder: Path, scenario: str) -> list[tuple[str, dict[str, Any]]]:
    results = []
    for path in sorted(folder.glob(f"{scenario}-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", path.name, exc)
            continue
        if isinstance(data, dict) and data.get("scenario") == scenario:
            results.append((path.name, data))
    return results


# ---- the README files -------------------------------------------------------------------------
def refresh_readme(folder: Path, scenario: str, section: str) -> Path:
    """Replace (or append) `scenario`'s marked section of the folder's README; keep the rest."""
    path = folder / README
    begin, end = f"<!-- livegen-bench:{scenario}:begin -->", f"<!-- livegen-bench:{scenario}:end -->"
    block = f"{begin}\n{section}{end}\n"
    text = path.read_text(encoding="utf-8") if path.is_file() else README_TITLE
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")
    return path


def _when(result: dict[str, Any]) -> str:
    m = result.get("machine") or {}
    where = m.get("gpu") or f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"
    return f"{where}; {str(result.get('date_utc', '?'))[:10]}"


def summary_section(folder: Path) -> str:
    """The project README's performance table: the headline numbers of every committed result."""
    rows = ["| scenario | case | result | machine; date | file |", "|---|---|---|---|---|"]
    for scenario, summary_rows in SUMMARIES.items():
        for name, r in load_results(folder, scenario):
            for case, text in summary_rows(r):
                rows.append(f"| {scenario} | {case} | {text} | {_when(r)} | [{name}](bench/results/{name}) |")
    return "\n".join(rows) + "\n"


def refresh_summary(readme: Path, folder: Path) -> Path | None:
    """Regenerate the marked performance table of the project README from `folder`."""
    if not readme.is_file():
        return None
    begin, end = "<!-- livegen-bench:summary:begin -->", "<!-- livegen-bench:summary:end -->"
    text = readme.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return None
    head, rest = text.split(begin, 1)
    readme.write_text(head + begin + "\n" + summary_section(folder) + end + rest.split(end, 1)[1], encoding="utf-8")
    return readme
