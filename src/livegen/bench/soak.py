"""`livegen bench soak`: one stream through a node for a long while; does anything grow?

A synthetic camera (with the delay stamp) is published over WHIP at a preset (default `blur`)
to a node subprocess (see `node`) and watched by one decoding viewer, for `--minutes` (default
10). Every `--seconds` (default 60: a row a minute) the bench records a row: the node process's
resident memory, threads and open files, publisher → viewer latency over the row (as e2e
measures it), the node's own in-node latency, frame rate and counters, and CPU.

Two goals, recorded as verdicts: the node's RSS at the end grows less than 5 % over its RSS at
the end of the first row (the first row holds the start-up: caches filling, the encoder's
buffers), and the latency p95 in the last row is at most the first row's plus 10 %: the
viewer's where the stamp survives the preset, else the node's own (`blur` blurs the stamp away
with the rest of the background, so at `blur` the viewer counts frames but reads no latency).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict
from typing import Any

import aiohttp

from livegen.bench import soak_report
from livegen.bench.cells import cell
from livegen.bench.cpu import CpuWindow
from livegen.bench.driver import BenchFailed, Scenario, bounded
from livegen.bench.node import LOOPBACK, NODE_START_TIMEOUT_S, STATS_TIMEOUT_S, STREAM, NodeProcess, started_node
from livegen.bench.options import SoakOptions
from livegen.bench.peers import CLOSE_TIMEOUT_S
from livegen.bench.report import result_head
from livegen.bench.verdicts import at_most, verdict
from livegen.bench.watched import (
    CONNECT_TIMEOUT_S,
    FIRST_FRAME_TIMEOUT_S,
    WatchedStream,
    node_figures,
    p95,
    sample_window,
)
from livegen.rtc.aiortc_adapter import use_host_addresses

READ_EVERY_S = 15.0
"""The node's stats are read (and progress printed) this often inside a row."""
GOAL_RSS_GROWTH_PCT = 5.0
GOAL_P95_GROWTH_PCT = 10.0


def say(message: str) -> None:
    print(f"[soak] {message}", flush=True)


async def measure_row(
    minute: int, opts: SoakOptions, node: NodeProcess, http: aiohttp.ClientSession, stream: WatchedStream
) -> dict[str, Any]:
    def progress(elapsed: float, answers: dict[str, dict[str, Any] | None]) -> None:
        stats = answers.get(stream.name) or {}
        if elapsed < opts.seconds:
            say(f"row {minute}/{opts.rows}  {elapsed:4g}/{opts.seconds:g} s  node fps out"
                f" {stats.get('fps_out', 0):5.1f}  in-node p95 {p95(stats.get('node_latency_ms')) or 0:6.1f} ms")

    cpu = CpuWindow({"node_process": node.pid, "bench_process": None})
    cpu.start()
    window = await sample_window(node, http, [stream], opts.seconds, min(READ_EVERY_S, opts.seconds), progress)
    usage = cpu.stop()
    viewer = await stream.viewer_figures(window.start_ms, window.end_ms, window.frames_sent[stream.name])
    if not viewer["frames_received"]:
        raise BenchFailed(f"row {minute}: no frame reached the viewer")
    return {
        "row": minute,
        "seconds": round(window.seconds, 2),
        **node.memory(),
        "viewer": viewer,
        "node": node_figures(window, stream.name),
        "cpu": usage,
    }


def row_line(row: dict[str, Any], rows: int) -> str:
    viewer, node = row["viewer"], row["node"] or {}
    lat, in_node = viewer["latency_ms"], node.get("node_latency_ms") or {}
    return (f"row {row['row']}/{rows}  RSS {cell(row['rss_mb'])} MB  threads {cell(row['threads'])}"
            f"  viewer {cell(viewer['delivered_fps'])} fps  latency p50/p95 {cell(lat['p50'])}/{cell(lat['p95'])} ms"
            f"  in-node p50/p95 {cell(in_node.get('p50'))}/{cell(in_node.get('p95'))} ms")


def growth_pct(first: float | None, last: float | None) -> float | None:
    return round(100.0 * (last - first) / first, 2) if first and last is not None else None


def latency_basis(rows: list[dict[str, Any]]) -> str:
    """Which p95 the latency goal is decided on: the viewer's (publisher → viewer, from the
    stamp) when the first and last rows have it, else the node's own. Presets that repaint the
    stamp's corner (`blur` does: it blurs the whole background) leave no stamp to read."""
    ends = (rows[0], rows[-1])
    return "viewer" if all(p95(r["viewer"]["latency_ms"]) is not None for r in ends) else "in-node"


def row_p95(row: dict[str, Any], basis: str) -> float | None:
    if basis == "viewer":
        return p95(row["viewer"]["latency_ms"])
    return p95((row["node"] or {}).get("node_latency_ms"))


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RSS growth after the first row, and the last row's latency p95 against the first's; both
    undecided with a single row."""
    first, last = rows[0], rows[-1]
    enough = len(rows) >= 2
    rss_growth = growth_pct(first["rss_mb"], last["rss_mb"])
    basis = latency_basis(rows)
    p95_first, p95_last = row_p95(first, basis), row_p95(last, basis)
    p95_limit = round(p95_first * (1 + GOAL_P95_GROWTH_PCT / 100), 1) if p95_first is not None else None
    return [
        verdict(
            f"RSS growth < {GOAL_RSS_GROWTH_PCT:g} % after the first row",
            (rss_growth < GOAL_RSS_GROWTH_PCT if rss_growth is not None else None) if enough else None,
            rss_first_mb=first["rss_mb"], rss_last_mb=last["rss_mb"], growth_pct=rss_growth,
        ),
        verdict(
            f"latency p95 in the last row ≤ the first row's + {GOAL_P95_GROWTH_PCT:g} %",
            at_most(p95_last, p95_limit) if enough else None,
            basis=basis, p95_first_ms=p95_first, p95_last_ms=p95_last, limit_ms=p95_limit,
        ),
    ]


async def measure_soak(opts: SoakOptions) -> dict[str, Any]:
    use_host_addresses([LOOPBACK])  # this process's aiortc peers gather on loopback only
    async with (
        aiohttp.ClientSession() as http,
        started_node(http, "soak", say, device=opts.device) as (node, ready),
    ):
        say(f"ready on {node.url} (device {ready.get('device')}); publishing"
            f" {opts.width}x{opts.height}@{opts.fps:g} with preset {opts.preset} for {opts.minutes:g} min")
        start_memory = node.memory()
        stream = await WatchedStream.open(node, http, STREAM, (opts.width, opts.height, opts.fps), opts.preset,
                                          decode=True)
        try:
            await stream.first_frame()
            say(f"first frame; warming up {opts.warmup:g} s")
            await asyncio.sleep(opts.warmup)
            rows = []
            for minute in range(1, opts.rows + 1):
                rows.append(await measure_row(minute, opts, node, http, stream))
                say(row_line(rows[-1], opts.rows))
            codec = stream.codec()
            end = await node.stream_stats(http, stream.name)
        finally:
            await stream.close()
    return {
        **result_head(opts.scenario, opts.command(), asdict(opts), ready.get("device")),
        "codec": codec,
        "node_at_start": start_memory,
        "rows": rows,
        "verdicts": verdicts(rows),
        "node_stats_end": end,
    }


def deadline_s(opts: SoakOptions) -> float:
    """A bound on the whole run: the node's start, the streams' set-up, every row at its slowest."""
    readings = math.ceil(opts.seconds / min(READ_EVERY_S, opts.seconds)) + 1
    row = opts.seconds + readings * STATS_TIMEOUT_S
    start = NODE_START_TIMEOUT_S + 3 * CONNECT_TIMEOUT_S + FIRST_FRAME_TIMEOUT_S + opts.warmup
    return start + opts.rows * row + 4 * CLOSE_TIMEOUT_S


SCENARIO = Scenario(
    name=SoakOptions.scenario,
    options=SoakOptions.from_args,
    measure=bounded(measure_soak, deadline_s),
    section=soak_report.section,
    table=soak_report.table,
)
