"""`livegen bench overload`: more work than the node can do; does every stream stay in budget?

`--streams` (default 3) synthetic cameras are published over WHIP at a preset (default `edges`,
1280×720 @ 30) to one node subprocess (see `node`), each a loop encoded once and replayed and
watched by a viewer that only counts frames (see `watched`), so the bench's peers cost it next
to nothing and the node has the machine. After a warm-up
the bench reads every stream's stats every `--interval` seconds for `--seconds`: frame rate
out, in-node latency p50/p95, drops, degradations and the `load` the node reports, so a latency
that keeps rising shows in the readings.

Goal, recorded as a verdict: at the end of the window every stream's in-node p95 (the node's
last 600 frames) is within `engine.budget_ms`, the node's setting.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict
from typing import Any

import aiohttp

from livegen.bench import overload_report
from livegen.bench.cpu import CpuWindow
from livegen.bench.driver import Scenario, bounded
from livegen.bench.node import (
    LOOPBACK,
    NODE_START_TIMEOUT_S,
    STATS_TIMEOUT_S,
    started_node,
)
from livegen.bench.options import OverloadOptions
from livegen.bench.peers import CLOSE_TIMEOUT_S
from livegen.bench.report import result_head
from livegen.bench.verdicts import all_met, at_most, verdict
from livegen.bench.watched import (
    CONNECT_TIMEOUT_S,
    FIRST_FRAME_TIMEOUT_S,
    WatchedStream,
    p95,
    sample_window,
    stream_figures,
)
from livegen.rtc.aiortc_adapter import use_host_addresses


def say(message: str) -> None:
    print(f"[overload] {message}", flush=True)


def stream_names(count: int) -> list[str]:
    return [f"load-{n}" for n in range(1, count + 1)]


def verdicts(streams: dict[str, dict[str, Any]], budget_ms: float | None) -> list[dict[str, Any]]:
    ends = {name: p95((s["node"] or {}).get("node_latency_ms")) for name, s in streams.items()}
    within = {name: at_most(value, budget_ms) for name, value in ends.items()}
    return [verdict(
        "every stream's in-node p95 ≤ engine.budget_ms",
        all_met([{"met": met} for met in within.values()]),
        budget_ms=budget_ms,
        p95_ms=ends,
        worst_p95_ms=max((v for v in ends.values() if v is not None), default=None),
    )]


async def measure_overload(opts: OverloadOptions) -> dict[str, Any]:
    use_host_addresses([LOOPBACK])  # this process's aiortc peers gather on loopback only
    size = (opts.width, opts.height, opts.fps)
    settings = {"rtc": {"max_streams": opts.streams}} if opts.streams > 8 else None
    async with (
        aiohttp.ClientSession() as http,
        started_node(http, "overload", say, device=opts.device, settings=settings) as (node, ready),
    ):
        engine = node.engine_settings()
        say(f"ready on {node.url} (device {ready.get('device')}); budget {engine.get('budget_ms')} ms;"
            f" publishing {opts.streams} × {opts.width}x{opts.height}@{opts.fps:g} with preset {opts.preset}")
        streams: list[WatchedStream] = []
        try:
            for name in stream_names(opts.streams):
                streams.append(await WatchedStream.open(node, http, name, size, opts.preset, decode=False))
            for stream in streams:
                await stream.first_frame()
            say(f"every viewer has a frame; warming up {opts.warmup:g} s")
            await asyncio.sleep(opts.warmup)

            def progress(elapsed: float, answers: dict[str, dict[str, Any] | None]) -> None:
                parts = [f"{name} {(s or {}).get('fps_out', 0):4.1f} fps p95 {p95((s or {}).get('node_latency_ms')) or 0:5.0f}"
                         for name, s in answers.items()]
                say(f"{elapsed:4g}/{opts.seconds:g} s  " + "  ".join(parts))

            cpu = CpuWindow({"node_process": node.pid, "bench_process": None})
            cpu.start()
            window = await sample_window(node, http, streams, opts.seconds, opts.interval, progress)
            usage = cpu.stop()
            figures: dict[str, dict[str, Any]] = {}
            for stream in streams:
                figures[stream.name] = await stream_figures(window, stream, "")
            codec = streams[0].codec()
        finally:
            await asyncio.gather(*(stream.close() for stream in streams))
    return {
        **result_head(opts.scenario, opts.command(), asdict(opts), ready.get("device")),
        "codec": codec,
        "engine": engine,
        "seconds": round(window.seconds, 2),
        "cpu": usage,
        "streams": figures,
        "verdicts": verdicts(figures, engine.get("budget_ms")),
    }


def deadline_s(opts: OverloadOptions) -> float:
    """A bound on the whole run: the node's start, every stream's set-up, the window at its slowest."""
    readings = math.ceil(opts.seconds / opts.interval) + 1
    setup = opts.streams * (3 * CONNECT_TIMEOUT_S + FIRST_FRAME_TIMEOUT_S)
    window = opts.warmup + opts.seconds + readings * STATS_TIMEOUT_S
    return NODE_START_TIMEOUT_S + setup + window + 2 * opts.streams * CLOSE_TIMEOUT_S


SCENARIO = Scenario(
    name=OverloadOptions.scenario,
    options=OverloadOptions.from_args,
    measure=bounded(measure_overload, deadline_s),
    section=overload_report.section,
    table=overload_report.table,
)
