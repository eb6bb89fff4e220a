"""The scenarios' options: per scenario one frozen dataclass holding the defaults, how the
parsed flags become it (checked: a ValueError names the bad flag), the command line that
reproduces a run (recorded in every result), and the flags themselves.

Kept free of media imports so building the command line stays cheap. `--output` and
`--compare` are the driver's, the same for every scenario.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Self

DEVICES = ("auto", "cpu", "cuda")
UNET_MODES = ("eager", "compile", "cudagraph")
PIPELINE_GOAL_PRESET = "blur+news"


def _csv(values: tuple[object, ...]) -> str:
    return ",".join(map(str, values))


def _counts(text: str, flag: str, low: int, high: int) -> tuple[int, ...]:
    """A comma-separated ladder of counts, sorted and without repeats, each `low`..`high`."""
    try:
        counts = tuple(sorted({int(n) for n in text.split(",") if n.strip()}))
    except ValueError:
        raise ValueError(f"{flag} must be numbers separated by commas, not {text!r}") from None
    if not counts or counts[0] < low or counts[-1] > high:
        raise ValueError(f"{flag} must be {low}..{high} each, not {text!r}")
    return counts


# ---- e2e, fanout, relay and pipeline: video at a fixed size and rate ------------------------------
@dataclass(frozen=True)
class VideoOptions:
    """The options of the scenarios that offer video at a fixed size and rate for a while."""

    scenario: ClassVar[str]
    max_fps: ClassVar[float] = 120

    width: int = 1280
    height: int = 720
    fps: float = 30.0
    seconds: float = 20.0
    warmup: float = 2.0

    @classmethod
    def from_args(cls, args: argparse.Namespace, **parsed: object) -> Self:
        """The options from `args`, with `parsed` in place of the flags that needed parsing."""
        opts = cls(**{f.name: parsed[f.name] if f.name in parsed else getattr(args, f.name) for f in fields(cls)})
        opts.check()
        return opts

    def check(self) -> None:
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise ValueError(f"--width/--height must be even and at least 64, not {self.width}x{self.height}")
        if not 1 <= self.fps <= self.max_fps or self.seconds <= 0 or self.warmup < 0:
            raise ValueError(f"--fps must be 1..{self.max_fps:g}, --seconds > 0 and --warmup >= 0")

    def command(self) -> str:
        words = ["livegen", "bench", self.scenario]
        for key, value in asdict(self).items():
            flag = key.replace("_", "-")
            if isinstance(value, bool):  # a switch: --name or --no-name
                words.append(f"--{flag}" if value else f"--no-{flag}")
                continue
            if isinstance(value, tuple):
                value = _csv(value)
            words += [f"--{flag}", f"{value:g}" if isinstance(value, float) else str(value)]
        return shlex.join(words)


@dataclass(frozen=True)
class PublishOptions(VideoOptions):
    """A publisher at a preset on a node subprocess: what e2e, fanout and relay share."""

    preset: str = "passthrough"
    device: str = "auto"


@dataclass(frozen=True)
class E2eOptions(PublishOptions):
    scenario: ClassVar[str] = "e2e"


@dataclass(frozen=True)
class FanoutOptions(PublishOptions):
    scenario: ClassVar[str] = "fanout"

    seconds: float = 15.0
    warmup: float = 3.0
    viewers: tuple[int, ...] = (1, 10, 50)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **parsed: object) -> Self:
        return super().from_args(args, viewers=_counts(args.viewers, "--viewers", 1, 200), **parsed)


@dataclass(frozen=True)
class RelayOptions(PublishOptions):
    scenario: ClassVar[str] = "relay"
    max_outputs: ClassVar[int] = 32

    seconds: float = 15.0
    warmup: float = 3.0
    outputs: tuple[int, ...] = (0, 1, 3)
    record: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace, **parsed: object) -> Self:
        outputs = _counts(args.outputs, "--outputs", 0, cls.max_outputs)
        return super().from_args(args, outputs=outputs, **parsed)


@dataclass(frozen=True)
class PresetsOptions(VideoOptions):
    """A scenario run in-process over a list of presets (`--presets a,b`) on a device."""

    presets: tuple[str, ...] = ()
    device: str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace, **parsed: object) -> Self:
        presets = tuple(p.strip() for p in args.presets.split(",") if p.strip())
        return super().from_args(args, presets=presets, **parsed)

    def check(self) -> None:
        super().check()
        if not self.presets:
            raise ValueError("--presets names no preset")


@dataclass(frozen=True)
class PipelineOptions(PresetsOptions):
    scenario: ClassVar[str] = "pipeline"
    max_fps: ClassVar[float] = 240

    seconds: float = 10.0
    presets: tuple[str, ...] = ("passthrough", "blur", "office", "studio", "news", PIPELINE_GOAL_PRESET)


# ---- soak, neighbour and overload: streams on one node for a while ------------------------------
@dataclass(frozen=True)
class SoakOptions(PublishOptions):
    """One stream for `minutes`, a row of figures every `seconds`."""

    scenario: ClassVar[str] = "soak"

    seconds: float = 60.0
    preset: str = "blur"
    minutes: float = 10.0

    def check(self) -> None:
        super().check()
        if self.minutes <= 0 or self.minutes * 60 < self.seconds:
            raise ValueError(f"--minutes must be > 0 and hold at least one row of --seconds {self.seconds:g}")

    @property
    def rows(self) -> int:
        return max(1, round(self.minutes * 60 / self.seconds))


def engine_max_chain() -> int:
    """`engine.max_chain` as a node started by the bench has it (the bench sets no engine limits
    in its settings file, so the default applies); 8 where the setting does not exist."""
    from livegen.config import EngineSettings

    return int(getattr(EngineSettings(), "max_chain", 8))


@dataclass(frozen=True)
class NeighbourOptions(PublishOptions):
    """A bystander stream at `preset`, measured alone and beside a noisy one whose chain is
    `chain_length` copies of `noisy_effect`."""

    scenario: ClassVar[str] = "neighbour"
    noisy_effect: ClassVar[str] = "edges"
    max_chain_length: ClassVar[int] = 64

    seconds: float = 30.0
    warmup: float = 5.0
    preset: str = "blur"
    chain_length: int = 8

    @classmethod
    def from_args(cls, args: argparse.Namespace, **parsed: object) -> Self:
        length = args.chain_length if args.chain_length is not None else engine_max_chain()
        return super().from_args(args, chain_length=length, **parsed)

    def check(self) -> None:
        super().check()
        if not 1 <= self.chain_length <= self.max_chain_length:
            raise ValueError(f"--chain-length must be 1..{self.max_chain_length}, not {self.chain_length}")


@dataclass(frozen=True)
class OverloadOptions(PublishOptions):
    """`streams` streams at `preset` on one node, the node's stats read every `interval` s."""

    scenario: ClassVar[str] = "overload"
    max_streams: ClassVar[int] = 32

    seconds: float = 30.0
    warmup: float = 5.0
    preset: str = "edges"
    streams: int = 3
    interval: float = 5.0

    def check(self) -> None:
        super().check()
        if not 1 <= self.streams <= self.max_streams:
            raise ValueError(f"--streams must be 1..{self.max_streams}, not {self.streams}")
        if not 0 < self.interval <= self.seconds:
            raise ValueError(f"--interval must be > 0 and at most --seconds, not {self.interval:g}")


def _add_video_flags(parser: argparse.ArgumentParser, d: VideoOptions, offered: str, measured: str) -> None:
    add = parser.add_argument
    add("--width", type=int, default=d.width, help=f"video width (default {d.width})")
    add("--height", type=int, default=d.height, help=f"video height (default {d.height})")
    add("--fps", type=float, default=d.fps, help=f"frames per second {offered} (default {d.fps:g})")
    add("--seconds", type=float, default=d.seconds, help=f"{measured} (default {d.seconds:g})")
    add("--warmup", type=float, default=d.warmup, help=f"seconds discarded first (default {d.warmup:g})")


def _add_publish_flags(parser: argparse.ArgumentParser, d: PublishOptions) -> None:
    parser.add_argument("--preset", default=d.preset, help=f"preset the node applies (default {d.preset})")
    parser.add_argument("--device", choices=DEVICES, default=d.device, help="the node's engine.device")


def add_e2e_flags(parser: argparse.ArgumentParser) -> None:
    d = E2eOptions()
    _add_video_flags(parser, d, "sent", "measured seconds per path")
    _add_publish_flags(parser, d)


def add_fanout_flags(parser: argparse.ArgumentParser) -> None:
    d = FanoutOptions()
    _add_video_flags(parser, d, "sent", "measured seconds per viewer count and output mode")
    _add_publish_flags(parser, d)
    parser.add_argument(
        "--viewers",
        default=_csv(d.viewers),
        help=f"viewer counts to measure, comma-separated (default {_csv(d.viewers)})",
    )


def add_relay_flags(parser: argparse.ArgumentParser) -> None:
    d = RelayOptions()
    _add_video_flags(parser, d, "sent", "measured seconds per step")
    _add_publish_flags(parser, d)
    add = parser.add_argument
    add("--outputs", default=_csv(d.outputs),
        help=f"RTMP output counts to measure, comma-separated, 0..{d.max_outputs} (default {_csv(d.outputs)})")
    add("--record", action=argparse.BooleanOptionalAction, default=d.record,
        help="measure a last step with the most outputs plus a recording (default on)")


def add_soak_flags(parser: argparse.ArgumentParser) -> None:
    d = SoakOptions()
    _add_video_flags(parser, d, "sent", "seconds per row of the table: one a minute")
    _add_publish_flags(parser, d)
    parser.add_argument("--minutes", type=float, default=d.minutes, help=f"how long to run (default {d.minutes:g})")


def add_neighbour_flags(parser: argparse.ArgumentParser) -> None:
    d = NeighbourOptions()
    _add_video_flags(parser, d, "sent per stream", "measured seconds, alone and beside the noisy stream")
    _add_publish_flags(parser, d)
    parser.add_argument(
        "--chain-length", type=int, default=None,
        help=f"{d.noisy_effect} effects in the noisy stream's chain (default: the node's engine.max_chain)",
    )


def add_overload_flags(parser: argparse.ArgumentParser) -> None:
    d = OverloadOptions()
    _add_video_flags(parser, d, "sent per stream", "measured seconds")
    _add_publish_flags(parser, d)
    add = parser.add_argument
    add("--streams", type=int, default=d.streams, help=f"streams published at once (default {d.streams})")
    add("--interval", type=float, default=d.interval,
        help=f"seconds between readings of the node's stats (default {d.interval:g})")


def add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    d = PipelineOptions()
    _add_video_flags(parser, d, "offered", "measured seconds per preset")
    add = parser.add_argument
    add("--presets", default=_csv(d.presets),
        help=f"presets to run, comma-separated; join presets with + (default {_csv(d.presets)})")
    add("--device", choices=DEVICES, default=d.device, help="engine device (default auto)")
    add("--config", type=Path, default=None, help="settings file (presets and assets folders)")


# ---- process: a file through the engine, and a live stream beside a file job ------------------
@dataclass(frozen=True)
class ProcessOptions(PresetsOptions):
    """A clip of `seconds` at width × height @ fps processed with each of `presets`; then, with
    `live`, a live stream at `live_preset` measured for `live_seconds` alone and beside a job."""

    scenario: ClassVar[str] = "process"

    seconds: float = 10.0
    presets: tuple[str, ...] = ("blur", "passthrough")
    live: bool = True
    live_preset: str = "blur"
    live_seconds: float = 10.0

    def check(self) -> None:
        super().check()
        if self.seconds > 600 or self.live_seconds <= 0 or self.live_seconds > 600:
            raise ValueError("--seconds and --live-seconds must be > 0 and at most 600")


def add_process_flags(parser: argparse.ArgumentParser) -> None:
    d = ProcessOptions()
    _add_video_flags(parser, d, "of the clip", "seconds of the clip (synthesized with audio)")
    add = parser.add_argument
    add("--presets", default=_csv(d.presets), help=f"presets the clip is processed with (default {_csv(d.presets)})")
    add("--live", action=argparse.BooleanOptionalAction, default=d.live,
        help="measure a live stream alone and beside a file job on the same worker (default on)")
    add("--live-preset", default=d.live_preset, help=f"the live stream's preset (default {d.live_preset})")
    add("--live-seconds", type=float, default=d.live_seconds,
        help=f"measured seconds of the live stream, alone and beside the job (default {d.live_seconds:g})")
    add("--device", choices=DEVICES, default=d.device, help="engine device (default auto)")
    add("--config", type=Path, default=None, help="settings file (presets and assets folders)")


# ---- diffusion: the diffusion stage's parts -----------------------------------------------------
@dataclass(frozen=True)
class DiffusionBenchOptions:
    tiny: bool = False
    architecture: str = "sd-turbo"
    sizes: tuple[tuple[int, int], ...] = ((512, 512), (768, 432))
    steps: tuple[int, ...] = (1, 2)
    streams: tuple[int, ...] = (1, 4, 8)
    modes: tuple[str, ...] = UNET_MODES
    frames: int = 60
    warmup: int = 10
    strength: float = 0.5
    device: str = "auto"
    controlnet: str = "none"
    """"canny": every stream follows its frames' edges through a random-weight ControlNet."""
    prompt_changes: int = 5
    """Per mode and step count: new prompts sent to a running stream, each timed until the first
    frame made with it (0: none)."""
    budget_s: float | None = None
    """Cases left when this many seconds have passed are skipped, and say so (None: no limit)."""
    output: Path | None = field(default=Path("bench/results"), compare=False)

    @classmethod
    def tiny_defaults(cls) -> DiffusionBenchOptions:
        return cls(tiny=True, architecture="tiny", sizes=((128, 128), (192, 112)), frames=20, warmup=3)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DiffusionBenchOptions:
        """The flags given over the defaults (the tiny ones with `--tiny`), checked."""
        base = cls.tiny_defaults() if args.tiny else cls()

        def numbers(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
            return default if text is None else tuple(int(v) for v in text.split(",") if v.strip())

        def names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
            return default if text is None else tuple(m.strip() for m in text.split(",") if m.strip())

        try:
            sizes = base.sizes if args.sizes is None else tuple(
                tuple(int(v) for v in item.lower().split("x")) for item in args.sizes.split(",") if item.strip()
            )
            opts = cls(
                tiny=args.tiny,
                architecture=args.architecture or base.architecture,
                sizes=sizes,  # type: ignore[arg-type]
                steps=numbers(args.steps, base.steps),
                streams=numbers(args.streams, base.streams),
                modes=names(args.modes, base.modes),
                frames=args.frames if args.frames is not None else base.frames,
                warmup=args.warmup if args.warmup is not None else base.warmup,
                strength=args.strength,
                device=args.device,
                prompt_changes=args.prompt_changes,
                budget_s=args.budget_s,
                controlnet=args.controlnet,
                output=args.output,
            )
        except ValueError:
            raise ValueError("--sizes, --steps and --streams take numbers (sizes as WxH) separated by commas") from None
        opts.check()
        return opts

    def check(self) -> None:
        for width, height in self.sizes:
            if width % 8 or height % 8 or min(width, height) < 32 or max(width, height) > 1024:
                raise ValueError(f"sizes must be multiples of 8 between 32 and 1024, not {width}x{height}")
        if not self.steps or not all(1 <= s <= 4 for s in self.steps):
            raise ValueError("--steps must be 1..4")
        if not self.streams or not all(1 <= n <= 16 for n in self.streams):
            raise ValueError("--streams must be 1..16")
        if unknown := set(self.modes) - set(UNET_MODES):
            raise ValueError(f"unknown --modes {sorted(unknown)} (known: {', '.join(UNET_MODES)})")
        if self.frames < 1 or self.warmup < 0:
            raise ValueError("--frames must be ≥ 1 and --warmup ≥ 0")
        if not 0 <= self.prompt_changes <= 50:
            raise ValueError("--prompt-changes must be 0..50")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ValueError("--budget-s must be > 0")

    def command(self) -> str:
        words = ["livegen", "bench", "diffusion"]
        if self.tiny:
            words.append("--tiny")
        words += ["--architecture", self.architecture, "--sizes", ",".join(f"{w}x{h}" for w, h in self.sizes),
                  "--steps", _csv(self.steps), "--streams", _csv(self.streams),
                  "--modes", ",".join(self.modes), "--frames", str(self.frames), "--warmup", str(self.warmup),
                  "--strength", f"{self.strength:g}", "--device", self.device,
                  "--prompt-changes", str(self.prompt_changes), "--controlnet", self.controlnet]
        if self.budget_s is not None:
            words += ["--budget-s", f"{self.budget_s:g}"]
        return shlex.join(words)


def add_diffusion_flags(parser: argparse.ArgumentParser) -> None:
    d = DiffusionBenchOptions()
    add = parser.add_argument
    add("--tiny", action="store_true", help="toy-sized models (CPU code-path check; sets small defaults)")
    add("--architecture", default=None, help="sd-turbo (default), sd15-lcm, tiny, tiny-lcm")
    add("--sizes", default=None, help="working sizes WxH, comma-separated (default 512x512,768x432)")
    add("--steps", default=None, help=f"steps per frame, comma-separated (default {_csv(d.steps)})")
    add("--streams", default=None, help=f"streams per UNet call (default {_csv(d.streams)})")
    add("--modes", default=None, help=f"UNet modes (default {_csv(d.modes)})")
    add("--frames", type=int, default=None, help=f"measured frames per case (default {d.frames})")
    add("--warmup", type=int, default=None, help=f"frames discarded first (default {d.warmup})")
    add("--strength", type=float, default=d.strength, help=f"img2img strength (default {d.strength:g})")
    add("--device", choices=DEVICES, default=d.device, help="device (default auto)")
    add("--prompt-changes", type=int, default=d.prompt_changes,
        help=f"new prompts timed per mode and step count until a frame shows them (default {d.prompt_changes})")
    add("--controlnet", choices=("none", "canny"), default=d.controlnet,
        help="every stream follows its frames' canny edges through a random-weight ControlNet (default none)")
    add("--budget-s", type=float, default=None,
        help="skip the cases left after this many seconds, and say so (default: no limit)")
