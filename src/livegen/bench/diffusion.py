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
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from livegen.bench import diffusion_report
from livegen.bench.driver import Scenario, record
from livegen.bench.options import DiffusionBenchOptions
from livegen.bench.report import result_head
from livegen.bench.samples import describe

PART_STATS = ("p50", "p95", "mean")
GOALS = {
    "single": "1 stream at 512×512, 1 step: ≥ 150 fps with p95 ≤ 10 ms",
    "eight": "8 streams at 512×512, 1 step: ≥ 30 fps each with p95 ≤ 50 ms",
    "prompt": "a new prompt shows in the output ≤ 100 ms after it is sent",
}


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
    from livegen.effects.generation import GenerationParams

    device = engine.device
    width, height = size
    params = GenerationParams(steps=steps, strength=opts.strength, size=max(size), similarity=1.0,
                              controlnet=opts.controlnet)
    opened = [engine.open_denoiser(params.model_copy(update={"seed": i}), f"a scene number {i}") for i in range(streams)]
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
    summary = {key: describe(values, PART_STATS, 3) for key, values in parts.items()}
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


def _goals(cases: list[dict[str, Any]], prompts: list[dict[str, Any]], device: torch.device, tiny: bool) -> dict[str, Any]:
    if device.type != "cuda" or tiny:
        return {"targets": GOALS, "single_met": None, "eight_met": None, "prompt_met": None,
                "note": "goals apply to CUDA at full size"}

    def best(streams: int) -> dict[str, Any] | None:
        found = [c for c in cases if c["size"] == "512x512" and c["steps"] == 1 and c["streams"] == streams]
        return min(found, key=lambda c: c["parts_ms"]["total"]["p95"], default=None)

    single, eight = best(1), best(8)
    fastest_prompt = min((p["ms"]["max"] for p in prompts if p["ms"]["max"] is not None), default=None)
    return {
        "targets": GOALS,
        "single_met": None if single is None else bool(
            single["fps_per_stream"] >= 150 and single["parts_ms"]["total"]["p95"] <= 10
        ),
        "single_mode": single and single["mode"],
        "eight_met": None if eight is None else bool(
            eight["fps_per_stream"] >= 30 and eight["parts_ms"]["total"]["p95"] <= 50
        ),
        "eight_mode": eight and eight["mode"],
        "prompt_met": None if fastest_prompt is None else bool(fastest_prompt <= 100),
    }


def prompt_change(engine: Any, size: tuple[int, int], steps: int, opts: DiffusionBenchOptions) -> dict[str, Any]:
    """Send `opts.prompt_changes` new prompts to one running stream; each is timed from the
    moment it is sent to the moment the first frame made with its embeddings is done (frames
    run back to back, so add up to one frame interval at the camera's rate)."""
    from livegen.effects.generation import GenerationParams

    device = engine.device
    width, height = size
    stream = engine.open_denoiser(GenerationParams(steps=steps, strength=opts.strength, size=max(size),
                                                   similarity=1.0, controlnet=opts.controlnet),
                                  "a prompt to start from")
    stream.conditioning.wait(60.0)
    picture = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)

    def frame() -> None:
        stream.begin_frame((width, height))
        engine.submit(stream, stream.prepare_input(picture))
        engine.flush()
        _sync(device)

    for _ in range(opts.warmup):
        frame()
    times: list[float] = []
    frames_until: list[int] = []
    for change in range(opts.prompt_changes):
        prompt = f"a new scene number {change}, seen for the first time"
        sent = time.perf_counter()
        stream.update(prompt, None)
        for count in range(1, 1000):
            showing = stream.conditioning.current() is not None and stream.conditioning.current_request.prompt == prompt
            frame()
            if showing:
                times.append((time.perf_counter() - sent) * 1000.0)
                frames_until.append(count)
                break
    stream.close()
    return {"size": f"{width}x{height}", "steps": steps, "changes": len(times),
            "ms": describe(times, ("p50", "max"), 1), "frames": frames_until}


def target(opts: DiffusionBenchOptions) -> tuple[torch.device, str]:
    """The device and architecture `opts` run on; ValueError where that is not practical."""
    from livegen.engine.worker import select_device

    opts.check()
    device = select_device(opts.device)
    architecture = opts.architecture if not opts.tiny or opts.architecture.startswith("tiny") else "tiny"
    if device.type == "cpu" and not architecture.startswith("tiny"):
        raise ValueError("on the CPU only the tiny architecture is practical: pass --tiny")
    return device, architecture


def run_diffusion_bench(opts: DiffusionBenchOptions, log=print) -> dict[str, Any]:
    """Every case of `opts`; the result document (also written under `opts.output` when set)."""
    from livegen.diffusion.batcher import DenoisingBatcher
    from livegen.diffusion.tiny import build_models

    device, architecture = target(opts)
    models = build_models(architecture, seed=0)
    if opts.controlnet != "none":
        from livegen.diffusion.tiny import build_controlnet

        models.controlnets[opts.controlnet] = build_controlnet(models.unet, seed=1)
    started = time.monotonic()
    modes: dict[str, Any] = {}
    cases: list[dict[str, Any]] = []
    prompts: list[dict[str, Any]] = []
    skipped: list[str] = []

    def in_budget(what: str) -> bool:
        if opts.budget_s is None or time.monotonic() - started < opts.budget_s:
            return True
        skipped.append(what)
        return False

    for mode in opts.modes:
        reason = _skip_reason(mode, device)
        if reason:
            modes[mode] = {"skipped": reason}
            log(f"  {mode}: skipped ({reason})")
            continue
        if not in_budget(f"{mode} (all cases)"):
            modes[mode] = {"skipped": f"over the {opts.budget_s:g} s budget"}
            continue
        engine = DenoisingBatcher(models, device, compile=mode == "compile", cuda_graphs=mode == "cudagraph",
                                  max_batch=64, profile=True)
        try:
            warm = engine.warmup(opts.sizes[0])
            modes[mode] = {"path": engine.path, "warmup_s": round(warm, 2), "fallbacks": engine.fallbacks}
            log(f"  {mode}: {engine.path} (warm-up {warm:.1f} s)")
            for size in opts.sizes:
                for steps in opts.steps:
                    for streams in opts.streams:
                        if not in_budget(f"{mode} {size[0]}x{size[1]} {steps} step(s) x{streams}"):
                            continue
                        case = {"mode": mode, **run_case(engine, size, steps, streams, opts)}
                        case["path"] = engine.path  # a fallback during the case shows here
                        cases.append(case)
                        log("    " + diffusion_report.case_line(case))
            for steps in opts.steps if opts.prompt_changes else ():
                if not in_budget(f"{mode} prompt change, {steps} step(s)"):
                    continue
                timing = {"mode": mode, **prompt_change(engine, opts.sizes[0], steps, opts)}
                prompts.append(timing)
                log(f"    prompt change {timing['size']} {steps} step(s): p50 {timing['ms']['p50']} ms, "
                    f"max {timing['ms']['max']} ms, after {timing['frames']} frame(s)")
            modes[mode]["fallbacks"] = list(engine.fallbacks)
        finally:
            engine.close()
    if skipped:
        log(f"  over the {opts.budget_s:g} s budget, skipped: {'; '.join(skipped)}")
    options = {**{k: v for k, v in asdict(opts).items() if k != "output"},
               "sizes": [f"{w}x{h}" for w, h in opts.sizes], "preset": architecture}
    result: dict[str, Any] = {
        **result_head(SCENARIO.name, opts.command(), options, str(device)),
        "architecture": architecture,
        "controlnet": opts.controlnet,
        "random_weights": True,
        "modes": modes,
        "cases": cases,
        "prompt_changes": prompts,
        "skipped_over_budget": skipped,
        "goal": _goals(cases, prompts, device, opts.tiny),
    }
    if opts.output is not None:
        path, _ = record(SCENARIO, result, opts.output)
        result["written_to"] = path.name
    return result


def result_name(result: dict[str, Any]) -> str:
    machine = result["machine"]
    where = machine.get("gpu") or machine.get("torch_device") or "cpu"
    control = "" if result.get("controlnet", "none") == "none" else f"-{result['controlnet']}"
    return f"{result['scenario']}-{result['architecture']}{control}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', where)}.json"


def checked_options(args: argparse.Namespace) -> DiffusionBenchOptions:
    """The flags as options, checked down to the device they need, before any model is built."""
    opts = DiffusionBenchOptions.from_args(args)
    target(opts)
    return opts


def measure(opts: DiffusionBenchOptions) -> dict[str, Any]:
    return run_diffusion_bench(replace(opts, output=None))  # the driver writes the result


SCENARIO = Scenario(
    name="diffusion",
    options=checked_options,
    measure=measure,
    section=diffusion_report.section,
    result_name=result_name,
)
