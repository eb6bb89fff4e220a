"""`livegen bench neighbour`: is a stream treated fairly when another one on the node is heavy?

A node subprocess (see `node`) runs a *bystander* stream: a synthetic camera (with the delay
stamp) published over WHIP at a preset (default `blur`) and watched by one decoding viewer. It
is measured alone, then a second, *noisy* stream is published (a replayed loop, watched by a
viewer that only counts frames: it costs the bench next to nothing, see `watched`) and PATCHed live (`PATCH /api/streams/noisy`) to the heaviest chain the node
accepts: `engine.max_chain` copies of `edges` (or `--chain-length`); after a warm-up the
bystander is measured again. A refused PATCH (422: chain too long) fails the run.

Per phase the bench records the bystander's node figures (frame rate out, in-node latency
p50/p95, drops, degradations, its `load`), its publisher → viewer latency, the noisy stream's
figures, and CPU. Goal, recorded as a verdict: beside the noisy stream the bystander keeps
≥ 90 % of its frame rate alone and an in-node p95 ≤ 110 % of its p95 alone.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict
from typing import Any

import aiohttp

from livegen.bench import neighbour_report
from livegen.bench.cpu import CpuWindow
from livegen.bench.driver import BenchFailed, Scenario, bounded
from livegen.bench.node import (
    LOOPBACK,
    NODE_START_TIMEOUT_S,
    STATS_TIMEOUT_S,
    NodeProcess,
    started_node,
)
from livegen.bench.options import NeighbourOptions
from livegen.bench.peers import CLOSE_TIMEOUT_S
from livegen.bench.report import result_head
from livegen.bench.verdicts import at_least, at_most, ratio, verdict
from livegen.bench.watched import (
    CONNECT_TIMEOUT_S,
    FIRST_FRAME_TIMEOUT_S,
    WatchedStream,
    p95,
    sample_window,
    stream_figures,
)
from livegen.rtc.aiortc_adapter import use_host_addresses

BYSTANDER = "bystander"
NOISY = "noisy"
NOISY_PRESET = "passthrough"
"""What the noisy stream runs until the PATCH makes it heavy."""
READ_EVERY_S = 5.0
FAIR_SHARE = 0.10
"""The bystander's frame rate and p95 beside the noisy stream may differ this much from alone."""


def say(phase: str, message: str) -> None:
    print(f"[{phase:9}] {message}", flush=True)


async def measure_phase(
    phase: str, opts: NeighbourOptions, node: NodeProcess, http: aiohttp.ClientSession, streams: list[WatchedStream]
) -> dict[str, Any]:
    def progress(elapsed: float, answers: dict[str, dict[str, Any] | None]) -> None:
        parts = []
        for name, stats in answers.items():
            stats = stats or {}
            parts.append(f"{name} fps out {stats.get('fps_out', 0):5.1f}"
                         f" in-node p95 {p95(stats.get('node_latency_ms')) or 0:6.1f} ms")
        say(phase, f"{elapsed:4g}/{opts.seconds:g} s  " + "  ".join(parts))

    cpu = CpuWindow({"node_process": node.pid, "bench_process": None})
    cpu.start()
    window = await sample_window(node, http, streams, opts.seconds, min(READ_EVERY_S, opts.seconds), progress)
    usage = cpu.stop()
    result: dict[str, Any] = {"seconds": round(window.seconds, 2), "cpu": usage}
    for stream in streams:
        result[stream.name] = await stream_figures(window, stream, f"{phase}: ")
    return result


async def make_noisy(opts: NeighbourOptions, node: NodeProcess, http: aiohttp.ClientSession) -> dict[str, Any]:
    """PATCH the noisy stream to its heavy chain; the chain the node says it runs now."""
    chain = [{"name": opts.noisy_effect} for _ in range(opts.chain_length)]
    answer = await node.patch_stream(http, NOISY, {"effects": chain})
    running = [effect.get("name") for effect in answer.get("effects", [])]
    if running != [opts.noisy_effect] * opts.chain_length:
        raise BenchFailed(f"the node accepted the noisy chain but runs {running}")
    return {"effect": opts.noisy_effect, "length": opts.chain_length, "running": len(running)}


def verdicts(alone: dict[str, Any], beside: dict[str, Any]) -> list[dict[str, Any]]:
    before, after = alone[BYSTANDER]["node"] or {}, beside[BYSTANDER]["node"] or {}
    fps_alone, fps_beside = before.get("fps_out_window"), after.get("fps_out_window")
    p95_alone, p95_beside = p95(before.get("node_latency_ms")), p95(after.get("node_latency_ms"))
    return [
        verdict(
            f"bystander fps beside the noisy stream ≥ {1 - FAIR_SHARE:.0%} of alone",
            at_least(fps_beside, fps_alone * (1 - FAIR_SHARE) if fps_alone is not None else None),
            alone=fps_alone, beside=fps_beside, ratio=ratio(fps_beside, fps_alone),
        ),
        verdict(
            f"bystander in-node p95 beside the noisy stream ≤ {1 + FAIR_SHARE:.0%} of alone",
            at_most(p95_beside, p95_alone * (1 + FAIR_SHARE) if p95_alone is not None else None),
            alone_ms=p95_alone, beside_ms=p95_beside, ratio=ratio(p95_beside, p95_alone),
        ),
    ]


async def measure_neighbour(opts: NeighbourOptions) -> dict[str, Any]:
    use_host_addresses([LOOPBACK])  # this process's aiortc peers gather on loopback only
    size = (opts.width, opts.height, opts.fps)
    async with (
        aiohttp.ClientSession() as http,
        started_node(http, "neighbour", lambda message: say("node", message), device=opts.device) as (node, ready),
    ):
        engine = node.engine_settings()
        say("node", f"ready on {node.url} (device {ready.get('device')}); engine.max_chain"
                    f" {engine.get('max_chain', '–')}, budget {engine.get('budget_ms')} ms")
        bystander = await WatchedStream.open(node, http, BYSTANDER, size, opts.preset, decode=True)
        noisy: WatchedStream | None = None
        try:
            await bystander.first_frame()
            say("alone", f"{BYSTANDER} at {opts.preset}: first frame; warming up {opts.warmup:g} s")
            await asyncio.sleep(opts.warmup)
            alone = await measure_phase("alone", opts, node, http, [bystander])

            noisy = await WatchedStream.open(node, http, NOISY, size, NOISY_PRESET, decode=False)
            await noisy.first_frame()
            chain = await make_noisy(opts, node, http)
            say("beside", f"{NOISY} runs {opts.chain_length} × {opts.noisy_effect}; warming up {opts.warmup:g} s")
            await asyncio.sleep(opts.warmup)
            beside = await measure_phase("beside", opts, node, http, [bystander, noisy])
            codec = bystander.codec()
        finally:
            if noisy is not None:
                await noisy.close()
            await bystander.close()
    return {
        **result_head(opts.scenario, opts.command(), asdict(opts), ready.get("device")),
        "codec": codec,
        "engine": engine,
        "noisy_chain": chain,
        "alone": alone,
        "beside": beside,
        "verdicts": verdicts(alone, beside),
    }


def deadline_s(opts: NeighbourOptions) -> float:
    """A bound on the whole run: the node's start, two streams' set-up, both phases at their slowest."""
    readings = math.ceil(opts.seconds / min(READ_EVERY_S, opts.seconds)) + 1
    phase = opts.warmup + opts.seconds + readings * STATS_TIMEOUT_S
    setup = 2 * (3 * CONNECT_TIMEOUT_S + FIRST_FRAME_TIMEOUT_S) + STATS_TIMEOUT_S
    return NODE_START_TIMEOUT_S + setup + 2 * phase + 4 * CLOSE_TIMEOUT_S


SCENARIO = Scenario(
    name=NeighbourOptions.scenario,
    options=NeighbourOptions.from_args,
    measure=bounded(measure_neighbour, deadline_s),
    section=neighbour_report.section,
    table=neighbour_report.table,
)
