"""`livegen bench all`: every scenario in one go, the way the committed results are made.

`PLAN` holds the cases: each scenario with the arguments its committed result was measured
with (e2e once per preset; pipeline with the committed presets). Each case runs in its own
process (`python -m livegen bench …`), one after another, so none inherits another's threads,
models or memory, and its progress goes straight to the terminal. A failed case is reported
and the run goes on; the exit code is 1 when any failed (130 when interrupted, which stops the
run: the case running then stops what it started first).

So that every committed result comes from one commit, the run refuses to start when tracked
files of the checkout have changed (`machine.checkout_changes`; the bench's own outputs do not
count), unless `--allow-dirty`. Every result carries the run's id (`run_id`: its UTC start and
the commit) besides the commit it recorded itself, and at the end the results folder's README
and the project README's table are regenerated (`livegen bench report`).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from livegen.bench.cells import aligned
from livegen.bench.machine import checkout_changes, checkout_revision, checkout_root
from livegen.bench.options import PipelineOptions

HELP = "run every scenario with the committed arguments, as one run of one clean commit"
CHILD_STOP_TIMEOUT_S = 60.0
"""How long an interrupted case may take to stop its node (and nginx) before it is terminated."""
SHOWN_CHANGES = 10


@dataclass(frozen=True)
class Case:
    label: str
    scenario: str
    arguments: tuple[str, ...] = ()
    minutes: float = 1.0
    """About how long the case takes on the 2-core reference machine (for the plan's estimate)."""

    def argv(self, output: Path, run_id: str) -> list[str]:
        return [sys.executable, "-m", "livegen", "bench", self.scenario, *self.arguments,
                "--output", str(output), "--run-id", run_id]


COMMITTED_PIPELINE_PRESETS = tuple(dict.fromkeys((*PipelineOptions().presets, "generated")))
"""The pipeline result in bench/results also times `generated` (the diffusion background)."""

PLAN: tuple[Case, ...] = (
    Case("e2e-passthrough", "e2e", ("--preset", "passthrough"), 1.5),
    Case("e2e-edges", "e2e", ("--preset", "edges"), 1.5),
    Case("fanout", "fanout", (), 3.0),
    Case("relay", "relay", (), 2.0),
    Case("pipeline", "pipeline", ("--presets", ",".join(COMMITTED_PIPELINE_PRESETS)), 2.0),
    Case("diffusion", "diffusion", ("--tiny",), 2.0),
    Case("neighbour", "neighbour", (), 1.5),
    Case("overload", "overload", (), 1.0),
    Case("process", "process", (), 1.5),
    # last: ten minutes of load leave this machine slower for a while (the file case measured
    # 1.95-1.99x real time right after the soak, 2.1-2.3x on its own)
    Case("soak", "soak", ("--minutes", "10"), 10.5),
)


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: int
    seconds: float

    @property
    def state(self) -> str:
        return {0: "ok", 1: "FAILED (could not measure)", 2: "FAILED (bad arguments)", 130: "interrupted"}.get(
            self.code, f"FAILED (exit code {self.code})")


def add_flags(parser: argparse.ArgumentParser, results: Path) -> None:
    """`results`: the default results folder (the driver's)."""
    add = parser.add_argument
    add("--output", type=Path, default=results, help=f"results folder (default {results})")
    add("--allow-dirty", action="store_true",
        help="run although tracked files of the checkout have changed (the results then say -dirty)")
    add("--only", default=None, help="run only these cases or scenarios, comma-separated (e.g. e2e,soak)")
    add("--skip", default=None, help="leave out these cases or scenarios, comma-separated (e.g. relay,soak)")


def _names(text: str | None, flag: str) -> set[str]:
    names = {name.strip() for name in (text or "").split(",") if name.strip()}
    known = {c.label for c in PLAN} | {c.scenario for c in PLAN}
    if unknown := sorted(names - known):
        raise ValueError(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(c.label for c in PLAN)})")
    return names


def selected(only: str | None, skip: str | None) -> list[Case]:
    """The cases of `PLAN` named by `--only` (all when not given) less those named by `--skip`;
    a case is named by its label or its scenario."""
    wanted, unwanted = _names(only, "--only"), _names(skip, "--skip")
    cases = [c for c in PLAN if (not wanted or {c.label, c.scenario} & wanted) and not {c.label, c.scenario} & unwanted]
    if not cases:
        raise ValueError("--only and --skip leave no case to run")
    return cases


def refusal(root: Path, allow_dirty: bool) -> str | None:
    """Why the run must not start from the checkout at `root` (None: it may)."""
    if allow_dirty:
        return None
    changes = checkout_changes(root)
    if changes is None:
        return (f"{root} is not a git checkout, so the results could not name their commit;"
                " pass --allow-dirty to run anyway")
    if changes:
        shown = "\n  ".join(changes[:SHOWN_CHANGES]) + ("\n  …" if len(changes) > SHOWN_CHANGES else "")
        return (f"the checkout has uncommitted changes to {len(changes)} tracked file(s):\n  {shown}\n"
                "commit them first, so every result comes from one commit, or pass --allow-dirty")
    return None


def run_id(revision: str | None) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{revision or 'unknown'}"


def run_case(argv: list[str]) -> int:
    """Run one case's process to its end. On Ctrl-C (which the case hears too) or SIGTERM (passed
    on to it) the case gets time to stop its node before it is terminated; then the interrupt
    goes on."""
    process = subprocess.Popen(argv)

    def terminate(signum: int, frame: FrameType | None) -> None:
        process.terminate()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)  # the CLI runs this on its main thread
    try:
        return process.wait()
    except KeyboardInterrupt:
        try:
            process.wait(CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def run(args: argparse.Namespace, runner: Callable[[list[str]], int] = run_case) -> int:
    try:
        cases = selected(args.only, args.skip)
    except ValueError as exc:
        print(f"livegen bench all: {exc}")
        return 2
    root = checkout_root()
    if reason := refusal(root, args.allow_dirty):
        print(f"livegen bench all: refusing to start: {reason}")
        return 2
    revision = checkout_revision(root)
    label = run_id(revision)
    estimate = sum(c.minutes for c in cases)
    print(f"livegen bench all: run {label}, {len(cases)} case(s) into {args.output}, about {estimate:.0f} min:"
          f" {', '.join(c.label for c in cases)}", flush=True)

    args.output.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    interrupted = False
    for number, case in enumerate(cases, 1):
        argv = case.argv(args.output, label)
        print(f"\n=== [{number}/{len(cases)}] {case.label}: livegen bench {' '.join(argv[4:])}", flush=True)
        begun = time.monotonic()
        try:
            code = runner(argv)
        except KeyboardInterrupt:
            code, interrupted = 130, True
        outcomes.append(Outcome(case, code, time.monotonic() - begun))
        print(f"=== {case.label}: {outcomes[-1].state} after {minutes(outcomes[-1].seconds)}", flush=True)
        if interrupted:
            break

    print()
    subprocess.run([sys.executable, "-m", "livegen", "bench", "report", "--output", str(args.output)], check=False)
    print(f"regenerated the reports in {args.output}")
    rows = [("case", "result", "time")] + [(o.case.label, o.state, minutes(o.seconds)) for o in outcomes]
    print(f"\nlivegen bench all: run {label}")
    print("\n".join(aligned(rows)))
    if skipped := [c.label for c in cases[len(outcomes):]]:
        print(f"  not run (interrupted): {', '.join(skipped)}")
    print(f"total time {minutes(time.monotonic() - started)}")
    if (now := checkout_revision(root)) != revision:
        print(f"warning: the checkout changed during the run ({revision} → {now}); the results say which they saw")
    if interrupted:
        return 130
    return 1 if any(o.code != 0 for o in outcomes) else 0
