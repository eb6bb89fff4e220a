"""The scenarios' options: per scenario one dataclass for the defaults, the argparse flags and
the record.

Kept free of media imports so building the command line stays cheap.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

SCENARIO = "e2e"
FANOUT_SCENARIO = "fanout"


def check_video(width: int, height: int, fps: float, seconds: float, warmup: float, max_fps: float = 120) -> None:
    """The flags every scenario shares; ValueError naming the bad one."""
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise ValueError(f"--width/--height must be even and at least 64, not {width}x{height}")
    if not 1 <= fps <= max_fps or seconds <= 0 or warmup < 0:
        raise ValueError(f"--fps must be 1..{max_fps:g}, --seconds > 0 and --warmup >= 0")


@dataclass(frozen=True)
class E2eOptions:
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    seconds: float = 20.0
    warmup: float = 2.0
    preset: str = "passthrough"
    device: str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> E2eOptions:
        opts = cls(args.width, args.height, args.fps, args.seconds, args.warmup, args.preset, args.device)
        check_video(opts.width, opts.height, opts.fps, opts.seconds, opts.warmup)
        return opts

    def command(self) -> str:
        words = ["livegen", "bench", SCENARIO]
        for key, value in asdict(self).items():
            words += [f"--{key}", f"{value:g}" if isinstance(value, float) else str(value)]
        return shlex.join(words)


@dataclass(frozen=True)
class FanoutOptions:
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    seconds: float = 15.0
    warmup: float = 3.0
    preset: str = "passthrough"
    device: str = "auto"
    viewers: tuple[int, ...] = (1, 10, 50)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FanoutOptions:
        try:
            viewers = tuple(sorted({int(n) for n in args.viewers.split(",") if n.strip()}))
        except ValueError:
            raise ValueError(f"--viewers must be numbers separated by commas, not {args.viewers!r}") from None
        if not viewers or viewers[0] < 1 or viewers[-1] > 200:
            raise ValueError(f"--viewers must be 1..200 each, not {args.viewers!r}")
        base = E2eOptions.from_args(args)  # the same checks on the shared flags
        return cls(base.width, base.height, base.fps, base.seconds, base.warmup, base.preset, base.device, viewers)

    def command(self) -> str:
        words = ["livegen", "bench", FANOUT_SCENARIO]
        for key, value in asdict(self).items():
            if isinstance(value, (tuple, list)):
                value = ",".join(map(str, value))
            words += [f"--{key}", f"{value:g}" if isinstance(value, float) else str(value)]
        return shlex.join(words)


def _add_shared(parser: argparse.ArgumentParser, d: E2eOptions | FanoutOptions, seconds_help: str) -> None:
    add = parser.add_argument
    add("--width", type=int, default=d.width, help=f"video width (default {d.width})")
    add("--height", type=int, default=d.height, help=f"video height (default {d.height})")
    add("--fps", type=float, default=d.fps, help=f"frames per second sent (default {d.fps:g})")
    add("--seconds", type=float, default=d.seconds, help=f"{seconds_help} (default {d.seconds:g})")
    add("--warmup", type=float, default=d.warmup, help=f"seconds discarded first (default {d.warmup:g})")
    add("--preset", default=d.preset, help=f"preset the node applies (default {d.preset})")
    add("--device", choices=["auto", "cpu", "cuda"], default=d.device, help="the node's engine.device")
    add("--output", type=Path, default=Path("bench/results"), help="results folder (default bench/results)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The e2e scenario's flags."""
    _add_shared(parser, E2eOptions(), "measured seconds per path")
    parser.add_argument(
        "--compare", type=Path, metavar="OLD.json", help="print how this run differs from an earlier result"
    )


def add_fanout_arguments(parser: argparse.ArgumentParser) -> None:
    d = FanoutOptions()
    _add_shared(parser, d, "measured seconds per viewer count and output mode")
    parser.add_argument(
        "--viewers",
        default=",".join(map(str, d.viewers)),
        help=f"viewer counts to measure, comma-separated (default {','.join(map(str, d.viewers))})",
    )
