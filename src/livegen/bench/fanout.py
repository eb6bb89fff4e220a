"""`livegen bench fanout`: one publisher, many viewers; what each extra viewer costs the node.

One `SyntheticVideoTrack` (with the delay stamp) is published over WHIP to a node subprocess
(see `node`), then viewers join over WHEP in steps (`--viewers 1,10,50`: 1, then 9 more, then 40
more). Each step warms up, then measures a window: delivered frame rate at every viewer, the
node's CPU time (/proc of its pid), latency at one viewer, and the node's own stream stats. The
whole ladder runs twice in the same run, on a fresh node each: `output.mode=encode_once`, then
`per_viewer`. Like for like: in per_viewer mode every viewer gets its own encoder with the
settings encode_once uses (x264 preset, tune, profile, fixed bitrate with the same VBV cap), so
the modes differ only in how often a frame is encoded; the result records what each mode's
encoder ran, as the node reports it, and whether they matched.

Only the first viewer decodes; the others count frames without decoding (see `audience`), so
the bench does not measure itself. The bench's own CPU is measured in every window, whole and
for two of its threads: the event loop (it receives and decrypts every viewer's packets, so it
is where a counting viewer costs) and the decoding viewer's decoder thread. If the loop nears a
full core, the numbers describe the bench, not the node.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import threading
from contextlib import suppress
from dataclasses import asdict
from typing import Any

import aiohttp

from livegen.bench import fanout_report
from livegen.bench.audience import (
    CONNECT_BATCH,
    CONNECT_TIMEOUT_S,
    Audience,
    first_frames,
    grow,
    video_receiver,
)
from livegen.bench.cpu import CpuWindow
from livegen.bench.driver import BenchFailed, Scenario, bounded
from livegen.bench.encoding import same_encoder
from livegen.bench.node import (
    LOOPBACK,
    NODE_START_TIMEOUT_S,
    STATS_TIMEOUT_S,
    STREAM,
    NodeProcess,
    counter_deltas,
    counters_window,
    started_node,
)
from livegen.bench.options import FanoutOptions
from livegen.bench.peers import CLOSE_TIMEOUT_S, close_client, video_codec
from livegen.bench.probe import summarize
from livegen.bench.report import result_head
from livegen.bench.samples import describe
from livegen.rtc.aiortc_adapter import decoder_thread_id, use_host_addresses
from livegen.testing.clients import SignallingError, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack, now_ms

MODES = ("encode_once", "per_viewer")
FIRST_FRAME_TIMEOUT_S = 15.0
PROGRESS_EVERY_S = 5.0
FULL_RATE = 0.95
"""A viewer gets the full frame rate when it receives this share of `--fps` (not of the frames
the publisher managed to send: a starved publisher is a miss too)."""
GOAL_VIEWERS = 50
GOAL_CPU_PER_10_VIEWERS_PCT = 10.0
OUTPUT_COUNTERS = (
    "frames_encoded",
    "encoder_frames_dropped",
    "keyframes_forced",
    "viewer_packets_dropped",
    "viewer_resyncs",
    "viewer_frames_dropped",
)
SPREAD = ("min", "median", "max")


def say(mode: str, viewers: int | None, message: str) -> None:
    where = f"{mode} ×{viewers}" if viewers is not None else mode
    print(f"[{where:16}] {message}", flush=True)


# ---- measuring one step -----------------------------------------------------------------------
def stats_window(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """The node's counters over the window (after − before), its output's too, and its last
    answer, kept whole."""
    if not before or not after:
        return None
    window = counters_window(before, after)
    window["output"] = counter_deltas(before.get("output") or {}, after.get("output") or {}, OUTPUT_COUNTERS)
    return {"window": window, "end": after}


async def measure_step(
    mode: str,
    audience: Audience,
    camera: SyntheticVideoTrack,
    opts: FanoutOptions,
    node: NodeProcess,
    http: aiohttp.ClientSession,
) -> dict[str, Any]:
    probe = audience.probe
    assert probe is not None and audience.decoding is not None
    n = audience.size
    threads = {  # where the bench's own time goes (see the module docstring)
        "decoder_thread": decoder_thread_id(video_receiver(audience.decoding)),
        "bench_loop": threading.get_native_id(),
    }
    cpu = CpuWindow({"node_process": node.pid, "bench_process": None}, threads)
    lost_before = [c.packets_lost for c in audience.counters]
    received_before = [(c.packets, c.payload_bytes) for c in audience.counters]

    before = await node.stream_stats(http)
    sent_before = camera.frames_sent
    cpu.start()
    start = now_ms()
    ticks = max(1, math.ceil(opts.seconds / PROGRESS_EVERY_S))
    for tick in range(1, ticks + 1):
        elapsed = min(opts.seconds, tick * PROGRESS_EVERY_S)
        await asyncio.sleep(max(0.0, start + elapsed * 1000 - now_ms()) / 1000)
        if probe.ended:
            raise BenchFailed(f"{mode} ×{n}: the decoding viewer's track ended")
        seconds = max(now_ms() - start, 1) / 1000
        fps = [len(probe.window(start, now_ms())) / seconds]
        fps += [c.frames_between(start, now_ms()) / seconds for c in audience.counters]
        say(
            mode,
            n,
            f"{elapsed:4g}/{opts.seconds:g} s  fps per viewer min {min(fps):5.1f}"
            f"  median {statistics.median(fps):5.1f}",
        )
    end = now_ms()
    usage = cpu.stop()
    sent = camera.frames_sent - sent_before
    after = await node.stream_stats(http)
    with suppress(TimeoutError):
        await probe.settle()

    seconds = (end - start) / 1000
    decoding = summarize(probe.window(start, end), sent, seconds)
    frames = [decoding["frames_received"]] + [c.frames_between(start, end) for c in audience.counters]
    lost = [c.packets_lost - b for c, b in zip(audience.counters, lost_before, strict=True)]
    received = [
        (c.packets - p, c.payload_bytes - b) for c, (p, b) in zip(audience.counters, received_before, strict=True)
    ]
    full = FULL_RATE * opts.fps * seconds
    return {
        "viewers": n,
        "seconds": round(seconds, 2),
        "frames_sent": sent,
        "sent_fps": round(sent / seconds, 2),
        "fps_per_viewer": describe([f / seconds for f in frames], SPREAD, 2),
        "frames_per_viewer": frames,
        "viewers_at_full_rate": sum(f >= full for f in frames),
        "counting_viewer_kbps": describe([8 * b / seconds / 1000 for _, b in received], SPREAD, 2),
        "counting_viewer_packets_per_s": describe([p / seconds for p, _ in received], SPREAD, 2),
        "counting_viewers_packets_lost": sum(lost),
        "latency_ms": decoding["latency_ms"],
        "decoding_viewer": decoding,
        "cpu": usage,
        "node_stats": stats_window(before, after),
    }


# ---- one output mode ----------------------------------------------------------------------------
async def publish(mode: str, camera: SyntheticVideoTrack, publisher: WhipPublisher) -> None:
    try:
        await publisher.publish(camera)
        await publisher.wait_connected(CONNECT_TIMEOUT_S)
    except SignallingError as exc:
        raise BenchFailed(f"{mode}: the publish was refused: {exc}") from None
    except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
        raise BenchFailed(f"{mode}: the publisher did not connect: {exc!r}") from None


async def run_mode(mode: str, opts: FanoutOptions, http: aiohttp.ClientSession) -> tuple[dict[str, Any], str | None]:
    """A fresh node in `mode`, one publisher, the viewer ladder; the node always stopped."""
    settings = {"output": {"mode": mode}, "rtc": {"max_viewers_per_stream": max(opts.viewers)}}
    async with started_node(http, mode, lambda message: say(mode, None, message), device=opts.device,
                            settings=settings) as (node, ready):
        camera = SyntheticVideoTrack(opts.width, opts.height, opts.fps, stamp=True)
        publisher = WhipPublisher(node.url, STREAM, http, preset=opts.preset)
        audience = Audience()
        try:
            say(
                mode,
                None,
                f"ready on {node.url} (device {ready.get('device')}); publishing"
                f" {opts.width}x{opts.height}@{opts.fps:g} with preset {opts.preset}",
            )
            await publish(mode, camera, publisher)
            steps = []
            for target in opts.viewers:
                say(mode, target, f"connecting {target - audience.size} more viewer(s)")
                await grow(audience, target, node, http)
                try:
                    receiving = await first_frames(audience, FIRST_FRAME_TIMEOUT_S)
                except TimeoutError:
                    raise BenchFailed(f"{mode} ×{target}: no frame reached the decoding viewer") from None
                say(mode, target, f"{audience.size} connected, {receiving} receiving; warming up {opts.warmup:g} s")
                await asyncio.sleep(opts.warmup)
                step = await measure_step(mode, audience, camera, opts, node, http)
                step["viewers_requested"] = target
                step["viewers_failed"] = len(audience.failed)
                steps.append(step)
            ingest = video_codec(publisher.pc.remoteDescription.sdp)
            egress = video_codec(audience.decoding.pc.remoteDescription.sdp) if audience.decoding else None
            output = ((steps[-1].get("node_stats") or {}).get("end") or {}).get("output") or {}
            result = {
                "codec": f"{ingest} in, {egress} out",
                "encoder": (output.get("encoder_settings") or {}).get(egress),
                "viewer_encoders": output.get("viewer_encoders"),
                "counting_viewers_send_reports": all(c.reports for c in audience.counters),
                "connect_failures": audience.failed[:5],
                "steps": steps,
                "cpu_per_10_viewers_pct": per_10_viewers(steps, "node_process_pct"),
                "cpu_per_10_viewers_by_step_pct": per_10_viewers_by_step(steps, "node_process_pct"),
                "bench_cpu_per_10_viewers_pct": per_10_viewers(steps, "bench_process_pct"),
            }
            return result, ready.get("device")
        finally:
            camera.stop()
            await audience.close()
            await close_client("WHIP publisher", publisher)


def per_10_viewers(steps: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of CPU % over viewer count, times 10: the cost of 10 more viewers."""
    points = [(s["viewers"], s["cpu"].get(key)) for s in steps if s["cpu"].get(key) is not None]
    if len({n for n, _ in points}) < 2:
        return None
    mean_n = sum(n for n, _ in points) / len(points)
    mean_c = sum(c for _, c in points) / len(points)
    slope = sum((n - mean_n) * (c - mean_c) for n, c in points) / sum((n - mean_n) ** 2 for n, _ in points)
    return round(10 * slope, 1)


def per_10_viewers_by_step(steps: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    """The same between consecutive steps ("1-10": …), where a saturated step shows itself."""
    result: dict[str, float | None] = {}
    for a, b in itertools.pairwise(steps):
        ca, cb = a["cpu"].get(key), b["cpu"].get(key)
        ok = ca is not None and cb is not None and b["viewers"] > a["viewers"]
        result[f"{a['viewers']}-{b['viewers']}"] = (
            round(10 * (cb - ca) / (b["viewers"] - a["viewers"]), 1) if ok else None
        )
    return result


# ---- the scenario -----------------------------------------------------------------------------
def cpu_ratios(modes: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Node CPU of encode_once ÷ per_viewer at each viewer count."""
    once = {s["viewers"]: s["cpu"].get("node_process_pct") for s in modes["encode_once"]["steps"]}
    each = {s["viewers"]: s["cpu"].get("node_process_pct") for s in modes["per_viewer"]["steps"]}
    return {str(n): round(once[n] / each[n], 2) if once[n] is not None and each.get(n) else None for n in once}


def goal(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The target to compare against, recorded, never asserted."""
    once = modes["encode_once"]
    largest = once["steps"][-1]
    per_10 = once["cpu_per_10_viewers_pct"]
    full = largest["viewers_at_full_rate"] == largest["viewers"] and largest["viewers"] >= GOAL_VIEWERS
    return {
        "target": f"{GOAL_VIEWERS} viewers at full frame rate, ≤ {GOAL_CPU_PER_10_VIEWERS_PCT:g}% of one core"
        " per 10 extra viewers (encode_once)",
        "viewers_measured": largest["viewers"],
        "viewers_at_full_rate": largest["viewers_at_full_rate"],
        "full_rate_met": full,
        "cpu_per_10_viewers_pct": per_10,
        "cpu_met": per_10 is not None and per_10 <= GOAL_CPU_PER_10_VIEWERS_PCT,
    }


async def measure_modes(opts: FanoutOptions) -> dict[str, Any]:
    use_host_addresses([LOOPBACK])  # this process's aiortc peers gather on loopback only
    modes: dict[str, dict[str, Any]] = {}
    device = None
    async with aiohttp.ClientSession() as http:
        for mode in MODES:
            modes[mode], device = await run_mode(mode, opts, http)
    return {
        **result_head(opts.scenario, opts.command(), asdict(opts), device),
        "modes": modes,
        "like_for_like": same_encoder(modes["encode_once"].get("encoder"), modes["per_viewer"].get("encoder")),
        "cpu_ratio_once_to_per_viewer": cpu_ratios(modes),
        "goal": goal(modes),
    }


def deadline_s(opts: FanoutOptions) -> float:
    """A bound on the whole run, generous enough for a node slowed down by per-viewer encoding."""
    batches = sum(math.ceil(max(1, b - a) / CONNECT_BATCH) for a, b in itertools.pairwise((0, *opts.viewers)))
    step = FIRST_FRAME_TIMEOUT_S + opts.warmup + opts.seconds + 2 * STATS_TIMEOUT_S
    per_mode = NODE_START_TIMEOUT_S + 2 * CONNECT_TIMEOUT_S + batches * CONNECT_TIMEOUT_S + len(opts.viewers) * step
    return len(MODES) * (per_mode + 4 * CLOSE_TIMEOUT_S)


SCENARIO = Scenario(
    name=FanoutOptions.scenario,
    options=FanoutOptions.from_args,
    measure=bounded(measure_modes, deadline_s),
    section=fanout_report.section,
    table=fanout_report.table,
)
