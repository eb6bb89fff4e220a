"""`livegen bench diffusion`: the diffusion stage's parts, timed on this machine.

The models are random-weight copies of a real architecture (`sd-turbo` by default: latency
does not depend on weight values, and nothing is downloaded) or, with `--tiny`, toy-sized ones
that a CPU runs in milliseconds (a check of the code path, not of speed). For every picture
size, step count, number of streams batched together and UNet mode (eager, torch.compile, CUDA
graphs; a mode that cannot run here is skipped with its reason) it runs `--frames` frames after
`--warmup` and reports p50/p95 of each part:

- upload: the camera picture shrunk to the working size on the host and copied to the device;
- taesd_encode, unet, taesd_decode: the engine's own parts (one UNet call per frame for all
  streams and all steps: the stream batch);
- composite: the output blended under a person mask at the working size;
- download: the result back to an (H, W, 3) uint8 picture on the host.

The device is synchronised between parts so each is timed alone; *total* is their sum per
frame (all streams), and *fps per stream* is 1000 / mean total. Results go to
bench/results/diffusion-<architecture>-<device>.json and the folder's README.
"""

from __future__ import annotations

import argparse
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livegen.bench.report import load_results, machine_info, refresh_readme, utc_now

SCENARIO = "diffusion"
SCHEMA = 1
MODES = ("eager", "compile", "cudagraph")
GOALS = {
    "single": "1 stream at 512×512, 1 step: ≥ 100 fps with p95 ≤ 15 ms",
    "four": "4 streams at 512×512, 1 step: 30 fps each with p95 ≤ 50 ms",
}


@dataclass(frozen=True)
class DiffusionBenchOptions:
    tiny: bool = False
    architecture: str = "sd-turbo"
    sizes: tuple[tuple[int, int], ...] = ((512, 512), (768, 432))
    steps: tuple[int, ...] = (1, 2)
    streams: tuple[int, ...] = (1, 2, 4)
    modes: tuple[str, ...] = MODES
    frames: int = 60
    warmup: int = 10
    strength: float = 0.5
    device: str = "auto"
    output: Path | None = field(default=Path("bench/results"), compare=False)

    @classmethod
    def tiny_defaults(cls) -> DiffusionBenchOptions:
        return cls(tiny=True, architecture="tiny", sizes=((128, 128), (192, 112)), frames=20, warmup=3)

    def check(self) -> None:
        for width, height in self.sizes:
            if width % 8 or height % 8 or min(width, height) < 32 or max(width, height) > 1024:
                raise ValueError(f"sizes must be multiples of 8 between 32 and 1024, not {width}x{height}")
        if not self.steps or not all(1 <= s <= 4 for s in self.steps):
            raise ValueError("--steps must be 1..4")
        if not self.streams or not all(1 <= n <= 16 for n in self.streams):
            raise ValueError("--streams must be 1..16")
        if unknown := set(self.modes) - set(MODES):
            raise ValueError(f"unknown --modes {sorted(unknown)} (known: {', '.join(MODES)})")
        if self.frames < 1 or self.warmup < 0:
            raise ValueError("--frames must be ≥ 1 and --warmup ≥ 0")

    def command(self) -> str:
        words = ["livegen", "bench", SCENARIO]
        if self.tiny:
            words.append("--tiny")
        words += ["--architecture", self.architecture, "--sizes", ",".join(f"{w}x{h}" for w, h in self.sizes),
                  "--steps", ",".join(map(str, self.steps)), "--streams", ",".join(map(str, self.streams)),
                  "--modes", ",".join(self.modes), "--frames", str(self.frames), "--warmup", str(self.warmup),
                  "--strength", f"{self.strength:g}", "--device", self.device]
        return shlex.join(words)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DiffusionBenchOptions()
    add = parser.add_argument
    add("--tiny", action="store_true", help="toy-sized models (CPU code-path check; sets small defaults)")
    add("--architecture", default=None, help="sd-turbo (default), sd15-lcm, tiny, tiny-lcm")
    add("--sizes", default=None, help="working sizes WxH, comma-separated (default 512x512,768x432)")
    add("--steps", default=None, help=f"steps per frame, comma-separated (default {','.join(map(str, d.steps))})")
    add("--streams", default=None, help=f"streams per UNet call (default {','.join(map(str, d.streams))})")
    add("--modes", default=None, help=f"UNet modes (default {','.join(d.modes)})")
    add("--frames", type=int, default=None, help=f"measured frames per case (default {d.frames})")
    add("--warmup", type=int, default=None, help=f"frames discarded first (default {d.warmup})")
    add("--strength", type=float, default=d.strength, help=f"img2img strength (default {d.strength:g})")
    add("--device", choices=["auto", "cpu", "cuda"], default=d.device, help="device (default auto)")
    add("--output", type=Path, default=Path("bench/results"), help="results folder (default bench/results)")


def options_from_args(args: argparse.Namespace) -> DiffusionBenchOptions:
    base = DiffusionBenchOptions.tiny_defaults() if args.tiny else DiffusionBenchOptions()

    def numbers(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
        return default if text is None else tuple(int(v) for v in text.split(",") if v.strip())

    try:
        sizes = base.sizes if args.sizes is None else tuple(
            tuple(int(v) for v in item.lower().split("x")) for item in args.sizes.split(",") if item.strip()
        )
        opts = DiffusionBenchOptions(
            tiny=args.tiny,
            architecture=args.architecture or base.architecture,
            sizes=sizes,  # type: ignore[arg-type]
            steps=numbers(args.steps, base.steps),
            streams=numbers(args.streams, base.streams),
            modes=base.modes if args.modes is None else tuple(m.strip() for m in args.modes.split(",") if m.strip()),
            frames=args.frames if args.frames is not None else base.frames,
            warmup=args.warmup if args.warmup is not None else base.warmup,
            strength=args.strength,
            device=args.device,
            output=args.output,
        )
    except ValueError:
        raise ValueError("--sizes, --steps and --streams take numbers (sizes as WxH) separated by commas") from None
    opts.check()
    return opts


def quantiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p95": None, "mean": None}
    values = np.asarray(samples)
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "mean": round(float(values.mean()), 3)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _skip_reason(mode: str, device: torch.device) -> str | None:
    if mode == "cudagraph" and device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if mode == "compile" and device.type != "cuda":
        return "torch.compile is measured on CUDA only (on the CPU it compiles for minutes and is not a target)"
    return None


def run_case(engine: Any, size: tuple[int, int], steps: int, streams: int, opts: DiffusionBenchOptions) -> dict[str, Any]:
    """`streams` streams at `size` with `steps` steps, one engine flush per frame for all."""
    from livegen.diffusion.params import GenerationParams

    device = engine.device
    width, height = size
    params = GenerationParams(steps=steps, strength=opts.strength, size=max(size), similarity=1.0)
    opened = [engine.open_stream(params.model_copy(update={"seed": i}), f"a scene number {i}") for i in range(streams)]
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(8)]
    mask = torch.zeros(1, height, width, device=device, dtype=engine.dtype)
    mask[:, :, : width // 2] = 1.0
    parts: dict[str, list[float]] = {k: [] for k in ("upload", "taesd_encode", "unet", "taesd_decode", "composite",
                                                     "download", "total")}
    for stream in opened:
        stream.conditioning.wait(60.0)
    for index in range(opts.warmup + opts.frames):
        picture = pictures[index % len(pictures)]
        _sync(device)
        t0 = time.perf_counter()
        images = []
        for stream in opened:
            stream.begin_frame((width, height))
            images.append(stream.prepare_input(picture))
        _sync(device)
        upload = (time.perf_counter() - t0) * 1000.0
        tickets = [engine.submit(stream, image) for stream, image in zip(opened, images, strict=True)]
        engine.flush()
        outputs = [t.output for t in tickets]
        if any(o is None for o in outputs):
            raise RuntimeError("the engine produced no output (prompt not encoded?)")
        t1 = time.perf_counter()
        composited = [torch.lerp(out, image, mask) for out, image in zip(outputs, images, strict=True)]
        _sync(device)
        t2 = time.perf_counter()
        for picture_out in composited:
            picture_out.clamp(0, 1).mul(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        t3 = time.perf_counter()
        if index < opts.warmup:
            continue
        timings = dict(engine.timings_ms)
        timings.update(upload=upload, composite=(t2 - t1) * 1000.0, download=(t3 - t2) * 1000.0)
        timings["total"] = sum(timings[k] for k in parts if k != "total")
        for key in parts:
            parts[key].append(timings.get(key, 0.0))
    for stream in opened:
        stream.close()
    summary = {key: quantiles(values) for key, values in parts.items()}
    mean = summary["total"]["mean"] or float("inf")
    return {
        "size": f"{width}x{height}",
        "steps": steps,
        "streams": streams,
        "frames": opts.frames,
        "parts_ms": summary,
        "fps_per_stream": round(1000.0 / mean, 2),
        "fps_all_streams": round(streams * 1000.0 / mean, 2),
    }


def _goals(cases: list[dict[str, Any]], device: torch.device, tiny: bool) -> dict[str, Any]:
    if device.type != "cuda" or tiny:
        return {"targets": GOALS, "single_met": None, "four_met": None, "note": "goals apply to CUDA at full size"}

    def best(streams: int) -> dict[str, Any] | None:
        found = [c for c in cases if c["size"] == "512x512" and c["steps"] == 1 and c["streams"] == streams]
        return min(found, key=lambda c: c["parts_ms"]["total"]["p95"], default=None)

    single, four = best(1), best(4)
    return {
        "targets": GOALS,
        "single_met": None if single is None else bool(
            single["fps_per_stream"] >= 100 and single["parts_ms"]["total"]["p95"] <= 15
        ),
        "single_mode": single and single["mode"],
        "four_met": None if four is None else bool(
            four["fps_per_stream"] >= 30 and four["parts_ms"]["total"]["p95"] <= 50
        ),
        "four_mode": four and four["mode"],
    }


def run_diffusion_bench(opts: DiffusionBenchOptions, log=print) -> dict[str, Any]:
    """Every case of `opts`; the result document (also written under `opts.output` when set)."""
    from livegen.diffusion.engine import DiffusionEngine
    from livegen.diffusion.tiny import build_models
    from livegen.engine.worker import select_device

    opts.check()
    device = select_device(opts.device)
    architecture = opts.architecture if not opts.tiny or opts.architecture.startswith("tiny") else "tiny"
    if device.type == "cpu" and not architecture.startswith("tiny"):
        raise ValueError("on the CPU only the tiny architecture is practical: pass --tiny")
    models = build_models(architecture, seed=0)
    modes: dict[str, Any] = {}
    cases: list[dict[str, Any]] = []
    for mode in opts.modes:
        reason = _skip_reason(mode, device)
        if reason:
            modes[mode] = {"skipped": reason}
            log(f"  {mode}: skipped ({reason})")
            continue
        engine = DiffusionEngine(models, device, compile=mode == "compile", cuda_graphs=mode == "cudagraph",
                                 max_batch=64, profile=True)
        try:
            warm = engine.warmup(opts.sizes[0])
            modes[mode] = {"path": engine.path, "warmup_s": round(warm, 2), "fallbacks": engine.fallbacks}
            log(f"  {mode}: {engine.path} (warm-up {warm:.1f} s)")
            for size in opts.sizes:
                for steps in opts.steps:
                    for streams in opts.streams:
                        case = {"mode": mode, **run_case(engine, size, steps, streams, opts)}
                        case["path"] = engine.path  # a fallback during the case shows here
                        cases.append(case)
                        log("    " + _line(case))
            modes[mode]["fallbacks"] = list(engine.fallbacks)
        finally:
            engine.close()
    result: dict[str, Any] = {
        "scenario": SCENARIO,
        "schema": SCHEMA,
        "date_utc": utc_now(),
        "command": opts.command(),
        "options": {**{k: v for k, v in asdict(opts).items() if k != "output"},
                    "sizes": [f"{w}x{h}" for w, h in opts.sizes], "preset": architecture},
        "machine": machine_info(str(device)),
        "architecture": architecture,
        "random_weights": True,
        "modes": modes,
        "cases": cases,
        "goal": _goals(cases, device, opts.tiny),
    }
    if opts.output is not None:
        path = write(result, opts.output)
        refresh_readme(opts.output, SCENARIO, section(load_results(opts.output, SCENARIO)))
        result["written_to"] = path.name
    return result


def result_name(result: dict[str, Any]) -> str:
    machine = result["machine"]
    where = machine.get("gpu") or machine.get("torch_device") or "cpu"
    return f"{SCENARIO}-{result['architecture']}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', where)}.json"


def write(result: dict[str, Any], folder: Path) -> Path:
    from livegen.bench.report import write_result

    return write_result(result, folder, result_name(result))


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _line(case: dict[str, Any]) -> str:
    p = case["parts_ms"]
    parts = ", ".join(f"{k} {_ms(v['p50'])}" for k, v in p.items() if k != "total")
    return (f"{case['size']} {case['steps']} step(s) ×{case['streams']}: total p50/p95 "
            f"{_ms(p['total']['p50'])}/{_ms(p['total']['p95'])} ms, {case['fps_per_stream']:.1f} fps per stream"
            f" ({parts})")


def section(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [
        "## diffusion: the diffusion stage's parts",
        "",
        "`livegen bench diffusion`: random-weight models of the named architecture (latency does not",
        "depend on weights); per case one engine flush per frame for all streams (the stream batch: one",
        "UNet call per frame). The device is synchronised between parts; total is their sum per frame.",
        "`tiny` rows check the code path on a CPU and say nothing about speed.",
        "",
        "| architecture | mode (path) | size | steps | streams | total p50 / p95 ms | UNet p50 | TAESD enc / dec p50"
        " | upload / composite / download p50 | fps per stream | device | date (UTC) | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results:
        m = r["machine"]
        for c in r["cases"]:
            p = c["parts_ms"]
            lines.append("| " + " | ".join([
                r["architecture"], f"{c['mode']} ({c['path']})", c["size"], str(c["steps"]), str(c["streams"]),
                f"{_ms(p['total']['p50'])} / {_ms(p['total']['p95'])}", _ms(p["unet"]["p50"]),
                f"{_ms(p['taesd_encode']['p50'])} / {_ms(p['taesd_decode']['p50'])}",
                f"{_ms(p['upload']['p50'])} / {_ms(p['composite']['p50'])} / {_ms(p['download']['p50'])}",
                f"{c['fps_per_stream']:.1f}", m.get("gpu") or m.get("cpu") or "?",
                r["date_utc"][:16].replace("T", " "), f"[{name}]({name})",
            ]) + " |")
        skipped = [f"{mode}: {info['skipped']}" for mode, info in r["modes"].items() if "skipped" in info]
        if skipped:
            lines += ["", f"Skipped in [{name}]({name}): " + "; ".join(skipped) + "."]
        goal = r.get("goal") or {}
        if goal.get("single_met") is not None:
            lines += ["", f"Goals in [{name}]({name}): {GOALS['single']}: "
                      f"{'met' if goal['single_met'] else 'not met'}; {GOALS['four']}: "
                      f"{'met' if goal['four_met'] else 'not met'}."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """The CLI entry: `livegen bench diffusion [...]`."""
    try:
        opts = options_from_args(args)
        print(f"diffusion bench: {opts.architecture}{' (tiny)' if opts.tiny else ''}, sizes "
              f"{', '.join(f'{w}x{h}' for w, h in opts.sizes)}, steps {opts.steps}, streams {opts.streams}")
        result = run_diffusion_bench(opts)
    except ValueError as exc:
        print(f"livegen bench diffusion: {exc}")
        return 2
    print(f"wrote {Path(opts.output or '.') / result['written_to']}" if "written_to" in result else "")
    return 0
