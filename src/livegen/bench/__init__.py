"""`livegen bench`: benchmark scenarios; results go to bench/results/ as JSON plus a summary.

e2e (`e2e.py`): publisher → node → viewer latency against a plain aiortc loopback, same run.
fanout (`fanout.py`): one publisher, many viewers: node CPU and delivered frame rate per viewer
count, encode-once against per-viewer encoding, same run.
pipeline (`pipeline.py`): frames through the engine in this process, per preset: time per stage.
diffusion (`diffusion.py`): the diffusion stage's device timings (UNet, TAESD, compositing).
report: regenerate the README's performance table from the committed results, running nothing.

Every scenario takes `--compare OLD.json` and, after its run, prints how its new result differs.
When a run writes into the checkout's own bench/results/, the README's performance table (between
its `livegen-bench:summary` markers) is regenerated from every result there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SCENARIOS = {
    "e2e": "publisher→node→viewer latency vs a plain aiortc loopback",
    "fanout": "node CPU and frame rate for 1…N viewers, encode-once vs per-viewer",
    "pipeline": "frames through the engine in-process per preset: time per stage",
    "diffusion": "diffusion stage timings per part, sizes, steps and streams",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from livegen.bench.diffusion import add_arguments as add_diffusion_arguments
    from livegen.bench.options import add_arguments as add_e2e_arguments
    from livegen.bench.options import add_fanout_arguments
    from livegen.bench.pipeline import add_arguments as add_pipeline_arguments

    scenarios = parser.add_subparsers(dest="scenario", required=True, metavar="scenario")
    adders = {"e2e": add_e2e_arguments, "fanout": add_fanout_arguments, "pipeline": add_pipeline_arguments,
              "diffusion": add_diffusion_arguments}
    for name, help_text in SCENARIOS.items():
        sub = scenarios.add_parser(name, help=help_text)
        adders[name](sub)
        if name != "e2e":  # e2e compares in its own terms (see report.comparison)
            sub.add_argument("--compare", type=Path, metavar="OLD.json",
                             help="print how this run differs from an earlier result")
    report = scenarios.add_parser("report", help="regenerate the README's performance table from bench/results/")
    report.add_argument("--output", type=Path, default=Path("bench/results"), help="results folder")


def _results(folder: Path | None) -> dict[Path, float]:
    if folder is None or not folder.is_dir():
        return {}
    return {path: path.stat().st_mtime for path in folder.glob("*.json")}


def _refresh_summary(folder: Path) -> None:
    """The README table, when `folder` is this checkout's own results folder."""
    from livegen.bench.report import refresh_summary
    from livegen.resources import bundled_dir

    root = bundled_dir("configs").parent
    if folder.resolve() == (root / "bench" / "results").resolve():
        if refresh_summary(root / "README.md", folder) is not None:
            print("refreshed the performance table in README.md")


def run_scenario(args: argparse.Namespace) -> int:
    output: Path | None = getattr(args, "output", None)
    if args.scenario == "report":
        _refresh_summary(args.output)
        return 0
    before = _results(output)
    if args.scenario == "diffusion":
        from livegen.bench import diffusion as scenario
    elif args.scenario == "pipeline":
        from livegen.bench import pipeline as scenario  # type: ignore[no-redef]
    elif args.scenario == "fanout":
        from livegen.bench import fanout as scenario  # type: ignore[no-redef]
    else:
        from livegen.bench import e2e as scenario  # type: ignore[no-redef]
    code = scenario.run(args)
    if code != 0 or output is None:
        return code
    written = [path for path, mtime in _results(output).items() if before.get(path) != mtime]
    old_path = getattr(args, "compare", None)
    if old_path is not None and args.scenario != "e2e":
        from livegen.bench.report import compare_results

        old = json.loads(old_path.read_text(encoding="utf-8"))
        for path in written:
            print(compare_results(old, json.loads(path.read_text(encoding="utf-8"))))
    _refresh_summary(output)
    return code
