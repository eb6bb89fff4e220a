"""`livegen process INPUT -o OUTPUT`: a video file through a preset or a chain of effects.

The same chains, built the same way as for a live stream (`PresetLibrary.requested`, so a bad
preset, chain or parameter reads as the API's 422 would), on a device worker of this process,
through `process.process_file`. The arguments that need no model are checked first, so a
mistake is answered at once. Progress goes to stderr: a bar on a terminal, a plain line every
few seconds otherwise; a summary follows on stdout. Ctrl-C or SIGTERM stops the job and leaves
no output behind.

Exit codes: 0 written; 1 processing failed; 2 bad arguments (preset, effects, params, the
output's name or folder); 3 the input is missing or not a video we can decode; 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pydantic import TypeAdapter, ValidationError

from livegen.config import EffectSpec
from livegen.files.checks import FileError, check_output, open_input

PROG = "livegen process"
EXIT_FAILED, EXIT_USAGE, EXIT_INPUT = 1, 2, 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
TERMINAL_INTERVAL_S = 0.25
PLAIN_INTERVAL_S = 5.0
BAR_WIDTH = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("input", type=Path, help="video file to process (MP4, MOV, WebM, MKV)")
    add("-o", "--output", type=Path, required=True,
        help="file to write: .mp4, .mov or .mkv (H.264) or .webm (VP8); replaced if it exists")
    chain = parser.add_mutually_exclusive_group()
    chain.add_argument("--preset", help="preset to apply (default: engine.default_preset)")
    chain.add_argument("--effects", metavar="JSON",
                       help='a chain of effects, as for PATCH /api/streams: \'[{"name": "grayscale"}]\'')
    add("--params", metavar="JSON", help='parameters by effect: \'{"background": {"blur": 30}}\'')
    add("--config", type=Path, help="YAML settings file (default: configs/default.yaml)")
    add("--progress-interval", type=float, default=None, metavar="SECONDS",
        help=f"seconds between progress reports (default {TERMINAL_INTERVAL_S:g} on a terminal, "
             f"{PLAIN_INTERVAL_S:g} otherwise)")


def _json_arg(text: str | None, flag: str, adapter: TypeAdapter[Any]) -> Any:
    """`text` parsed as JSON and checked; ValueError naming the flag and what is wrong."""
    if text is None:
        return None
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ValueError(f"{flag}: {problems}") from None


EFFECTS = TypeAdapter(list[EffectSpec])
PARAMS = TypeAdapter(dict[str, dict[str, Any]])


def run(args: argparse.Namespace) -> int:
    try:
        check_output(args.input, args.output)
        open_input(args.input).close()
        effects = _json_arg(args.effects, "--effects", EFFECTS)
        params = _json_arg(args.params, "--params", PARAMS)
    except FileError as exc:
        return _fail(exc.detail, EXIT_USAGE if exc.side == "output" else EXIT_INPUT)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.progress_interval is not None and args.progress_interval <= 0:
        return _fail("--progress-interval must be > 0", EXIT_USAGE)

    from livegen.errors import Unprocessable
    from livegen.files.process import ProcessCanceled, process_file

    try:
        node = _engine(args.config)
    except KeyboardInterrupt:
        return _fail("interrupted while loading", EXIT_SIGNAL[signal.SIGINT])
    try:
        try:
            spec = node.presets.requested(args.preset, effects, params)
            if _generates(spec):
                print(f"{PROG}: loading the diffusion stage …", file=sys.stderr, flush=True)
                node.generator.load()
            chain = node.presets.build(spec)
        except Unprocessable as exc:
            return _fail(exc.detail, EXIT_USAGE)
        report = ProgressReport(sys.stderr, args.progress_interval)
        with _cancel_on_signals() as (cancel, received):
            try:
                final = process_file(args.input, args.output, chain, node.worker, on_progress=report, cancel=cancel)
            except ProcessCanceled:
                report.close()
                return _fail(f"stopped ({signal.Signals(received[0]).name}); no output written",
                             EXIT_SIGNAL.get(received[0], 130))
            except FileError as exc:
                report.close()
                return _fail(exc.detail, EXIT_USAGE if exc.side == "output" else EXIT_INPUT)
            except Exception as exc:
                report.close()
                return _fail(f"processing failed: {type(exc).__name__}: {exc}; no output written", EXIT_FAILED)
        report.close()
        print(summary(args.output, spec.name, final))
        return 0
    finally:
        node.close()


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def _generates(spec: Any) -> bool:
    """Whether the chain asks the diffusion stage for pictures (then it is loaded first, so the
    first frames do not show the fallback)."""
    return any(
        effect.name == "stylize" or (effect.name == "background" and effect.params.get("mode") == "generated")
        for effect in spec.effects
    )


def _engine(config: Path | None) -> Any:
    """The worker, diffusion stage and presets, built as the node builds them; the worker runs."""
    from livegen.config import load_settings
    from livegen.runtime import NodeEngine

    engine = NodeEngine.build(load_settings(config))
    engine.worker.start()
    return engine


@contextmanager
def _cancel_on_signals():
    """Ctrl-C and SIGTERM set the job's cancel event (the job then stops between frames);
    `received` holds the signal."""
    cancel = threading.Event()
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        cancel.set()

    previous = {}
    for signum in EXIT_SIGNAL:
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: the caller cancels some other way
            pass
    try:
        yield cancel, received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class ProgressReport:
    """`on_progress` for the command line: a bar redrawn in place on a terminal, a plain line
    every `interval` seconds otherwise (and always the first and the last)."""

    def __init__(self, stream: TextIO, interval: float | None = None):
        self.stream = stream
        self.terminal = stream.isatty()
        self.interval = interval if interval is not None else (
            TERMINAL_INTERVAL_S if self.terminal else PLAIN_INTERVAL_S)
        self.last = -float("inf")
        self.drawn = False

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        final = progress.eta_s == 0.0 and progress.frames_total == progress.frames_done
        if not final and now - self.last < self.interval:
            return
        self.last = now
        if self.terminal:
            self.stream.write("\r" + self.bar(progress) + "\x1b[K")
            self.drawn = True
        else:
            self.stream.write(f"{PROG}: {self.line(progress)}\n")
        self.stream.flush()

    @staticmethod
    def line(p: Any) -> str:
        total = p.frames_total
        done = f"{p.frames_done}/{total} frames ({100 * p.frames_done / total:.0f} %)" if total else f"{p.frames_done} frames"
        return f"{done}, {p.fps:.1f} fps, ETA {clock(p.eta_s)}, elapsed {clock(p.elapsed_s)}"

    @staticmethod
    def bar(p: Any) -> str:
        total = p.frames_total
        if total:
            filled = round(BAR_WIDTH * min(1.0, p.frames_done / total))
            head = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * p.frames_done / total:3.0f} %  "
        else:
            head = ""
        return f"{head}{p.frames_done}{f'/{total}' if total else ''} frames  {p.fps:5.1f} fps  ETA {clock(p.eta_s)}"

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def summary(output: Path, chain: str, final: Any) -> str:
    factor = final.media_s / final.elapsed_s if final.elapsed_s > 0 else 0.0
    return (f"{PROG}: wrote {output} ({chain}): {final.frames_done} frames, {final.media_s:.1f} s of video in "
            f"{final.elapsed_s:.1f} s: {final.fps:.1f} fps, {factor:.2f}× real time")
