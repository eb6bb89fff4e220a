"""The one bench driver: every scenario runs through `run_scenario`.

A scenario brings only what is its own, as a `Scenario`: how its flags become checked options,
how it measures, how its result reads. The driver does the rest the same way for all: it checks
the flags and reads the `--compare` file before anything starts, keeps the WebRTC libraries'
chatter out of the progress lines, runs the measurement, writes the JSON result and the
scenario's section of the results folder's README, prints the scenario's table (and how the run
differs from the `--compare` one), and regenerates the project README's performance table when
the results folder is this checkout's own.

`livegen bench all` (`suite`) runs every scenario, each in its own process, through this same
driver.

Exit codes: 0 measured and written; 1 the scenario could not measure (`BenchFailed`, on
stderr); 2 a bad flag, settings file or `--compare` file (on stdout, with the progress lines);
130 interrupted (Ctrl-C, or SIGTERM in the network scenarios).

Imports stay light here: a scenario's module (aiortc, torch, …) loads only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livegen.bench import options
from livegen.bench.comparison import compare_results
from livegen.bench.report import load_results, refresh_readme, refresh_summary, result_name, write_result

log = logging.getLogger(__name__)

RESULTS = Path("bench/results")
SCENARIOS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "e2e": ("publisher→node→viewer latency vs a plain aiortc loopback", options.add_e2e_flags),
    "fanout": ("node CPU and frame rate for 1…N viewers, encode-once vs per-viewer", options.add_fanout_flags),
    "relay": ("node CPU per RTMP output and for a recording; publisher→nginx→player latency",
              options.add_relay_flags),
    "pipeline": ("frames through the engine in-process per preset: time per stage", options.add_pipeline_flags),
    "diffusion": ("diffusion stage timings per part, sizes, steps and streams", options.add_diffusion_flags),
    "neighbour": ("a stream alone and beside a noisy one at the longest chain: is it treated fairly",
                  options.add_neighbour_flags),
    "overload": ("several heavy streams on one node: in-node latency against the budget", options.add_overload_flags),
    "soak": ("one stream for minutes: the node's memory and latency, minute by minute", options.add_soak_flags),
    "process": ("a video file through the engine per preset (real-time factor), and a live stream beside a file job",
                options.add_process_flags),
}
NOISY_LOGGERS = ("aioice", "aiortc")

Results = list[tuple[str, dict[str, Any]]]


class BenchFailed(Exception):
    """The scenario could not measure; the message says which step failed."""


@dataclass(frozen=True)
class Scenario:
    """What one scenario brings to the driver; its module names it `SCENARIO`."""

    name: str
    options: Callable[[argparse.Namespace], Any]
    """Flags → checked options (anything with `command()`); ValueError names what is wrong."""
    measure: Callable[[Any], dict[str, Any]]
    """Options → the result document; BenchFailed when it cannot measure."""
    section: Callable[[Results], str]
    """Every result of this scenario in a folder → its section of the folder's README."""
    table: Callable[[dict[str, Any]], str] | None = None
    """A result → what is printed after the run (None: the progress lines said it all)."""
    compare: Callable[[dict[str, Any], dict[str, Any]], str] = compare_results
    result_name: Callable[[dict[str, Any]], str] = result_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scenarios = parser.add_subparsers(dest="scenario", required=True, metavar="scenario")
    for name, (help_text, add_flags) in SCENARIOS.items():
        sub = scenarios.add_parser(name, help=help_text)
        add_flags(sub)
        sub.add_argument("--output", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
        sub.add_argument("--compare", type=Path, metavar="OLD.json",
                         help="print how this run differs from an earlier result")
        sub.add_argument("--run-id", default=None, help="a label recorded in the result (`bench all` gives its run's)")
    from livegen.bench import suite  # its flags are its own

    suite.add_flags(scenarios.add_parser("all", help=suite.HELP), RESULTS)
    report = scenarios.add_parser(
        "report", help="regenerate the results folder's README and the project README's table from the results"
    )
    report.add_argument("--output", type=Path, default=RESULTS, help="results folder")


def run_scenario(args: argparse.Namespace) -> int:
    if args.scenario == "report":
        for name in SCENARIOS:
            scenario = importlib.import_module(f"{__package__}.{name}").SCENARIO
            refresh_readme(args.output, name, scenario.section(load_results(args.output, name)))
        refresh_project_summary(args.output)
        return 0
    if args.scenario == "all":
        from livegen.bench import suite

        return suite.run(args)
    scenario: Scenario = importlib.import_module(f"{__package__}.{args.scenario}").SCENARIO
    prefix = f"livegen bench {scenario.name}"
    try:
        opts = scenario.options(args)
        old = json.loads(args.compare.read_text(encoding="utf-8")) if args.compare else None
    except (OSError, ValueError) as exc:
        print(f"{prefix}: {exc}")
        return 2
    print(f"livegen bench: {opts.command()}", flush=True)
    try:
        with quiet_loggers():
            result = scenario.measure(opts)
    except BenchFailed as exc:
        print(f"{prefix}: failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"{prefix}: interrupted; everything it started was stopped", file=sys.stderr)
        return 130

    saved, readme = record(scenario, result, args.output, getattr(args, "run_id", None))
    if scenario.table is not None:
        print()
        print(scenario.table(result))
    if old is not None:
        print()
        print(scenario.compare(old, json.loads(saved.read_text(encoding="utf-8"))))
    print(f"\nwrote {saved} and {readme}")
    refresh_project_summary(args.output)
    return 0


def record(scenario: Scenario, result: dict[str, Any], folder: Path, run_id: str | None = None) -> tuple[Path, Path]:
    """Write `result` (labelled `run_id`, if any) into `folder`, then regenerate the scenario's
    section of the folder's README from every result of it there; both paths."""
    if run_id:
        result = {"scenario": result["scenario"], "run_id": run_id, **result}
    saved = write_result(result, folder, scenario.result_name(result))
    readme = refresh_readme(folder, scenario.name, scenario.section(load_results(folder, scenario.name)))
    return saved, readme


def refresh_project_summary(folder: Path) -> None:
    """The project README's performance table, when `folder` is this checkout's own results."""
    from livegen.resources import bundled_dir

    root = bundled_dir("configs").parent
    if folder.resolve() != (root / RESULTS).resolve():
        log.debug("%s is not this checkout's results folder; the README's table stays", folder)
    elif refresh_summary(root / "README.md", folder) is not None:
        print("refreshed the performance table in README.md")


@contextmanager
def quiet_loggers() -> Iterator[None]:
    """ICE checks and RTCP chatter would bury the progress lines: WARNING and up only, for a run."""
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in levels:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def bounded(
    main: Callable[[Any], Coroutine[Any, Any, dict[str, Any]]], deadline_s: Callable[[Any], float]
) -> Callable[[Any], dict[str, Any]]:
    """A network scenario's `measure`: `main(opts)` on a fresh event loop, under the overall
    deadline `deadline_s(opts)`. SIGTERM cancels it like Ctrl-C, so its cleanup (peers closed,
    node stopped) runs either way."""
    return lambda opts: asyncio.run(_bounded(main(opts), deadline_s(opts)))


async def _bounded(main: Coroutine[Any, Any, dict[str, Any]], deadline_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    with suppress(NotImplementedError, RuntimeError):  # Windows, or not the main thread
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        async with asyncio.timeout(deadline_s):
            return await main
    except TimeoutError:
        raise BenchFailed(f"the scenario did not finish within {deadline_s:.0f} s") from None
    finally:
        with suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
