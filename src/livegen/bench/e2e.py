"""`livegen bench e2e`: publisher → viewer latency through a real node, against a plain aiortc
loopback measured in the same run.

Both paths send the same `SyntheticVideoTrack` with the delay stamp and read the stamp back at
the receiver (see `probe`). The *baseline* path is two aiortc peers in this process that exchange
descriptions directly; the *node* path publishes over WHIP to `livegen serve` started as a
subprocess (see `node`) and watches over WHEP. Each path runs a warm-up, then a measured window;
the node path also records the node's own stream stats and CPU time over that window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection

from livegen.bench.cpu import CpuWindow
from livegen.bench.node import LOOPBACK, NodeProcess, NodeStartError
from livegen.bench.options import SCENARIO, E2eOptions
from livegen.bench.probe import LatencyProbe, latencies, percentiles, summarize
from livegen.bench.report import (
    comparison,
    e2e_section,
    e2e_table,
    load_results,
    machine_info,
    refresh_readme,
    utc_now,
    write_result,
)
from livegen.rtc.ice import use_host_addresses
from livegen.rtc.sdp import negotiated_codec
from livegen.testing.clients import SignallingError, WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack, now_ms

log = logging.getLogger(__name__)

SCHEMA = 1
STREAM = "bench"
NODE_START_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 15.0
FIRST_FRAME_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 5.0
NOISY_LOGGERS = ("aioice", "aiortc")


class BenchFailed(Exception):
    """The scenario could not measure; the message says which step failed."""


def say(path: str, message: str) -> None:
    print(f"[{path:8}] {message}", flush=True)


def video_codec(sdp: str | None) -> str | None:
    """The codec an SDP answer picked for its first video section."""
    return negotiated_codec(sdp, "video") if sdp else None


# ---- measuring one path -----------------------------------------------------------------------
@dataclass
class Window:
    result: dict[str, Any]
    stats_before: dict[str, Any] | None
    stats_after: dict[str, Any] | None


async def measure(
    path: str,
    probe: LatencyProbe,
    sender: SyntheticVideoTrack,
    opts: E2eOptions,
    cpu: CpuWindow,
    node_stats: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
) -> Window:
    """Warm up, then measure `opts.seconds` of frames arriving at `probe`, printing progress."""
    probe.start()
    try:
        await asyncio.wait_for(probe.first_frame.wait(), FIRST_FRAME_TIMEOUT_S)
    except TimeoutError:
        raise BenchFailed(f"{path}: no video frame arrived within {FIRST_FRAME_TIMEOUT_S:.0f} s") from None
    say(path, f"first frame; warming up {opts.warmup:g} s")
    await asyncio.sleep(opts.warmup)

    before = await node_stats() if node_stats else None
    sent_before = sender.frames_sent
    cpu.start()
    start = now_ms()
    for tick in range(1, math.ceil(opts.seconds) + 1):
        await asyncio.sleep(max(0.0, start + min(tick, opts.seconds) * 1000 - now_ms()) / 1000)
        if probe.ended:
            raise BenchFailed(f"{path}: the received track ended during the measurement")
        so_far = probe.window(start, now_ms())
        lat = percentiles(latencies(so_far))
        say(
            path,
            f"{min(tick, opts.seconds):>4g}/{opts.seconds:g} s  received {len(so_far):5d}"
            f"  {len(so_far) / max(now_ms() - start, 1) * 1000:5.1f} fps"
            f"  latency p50 {lat['p50'] or 0:6.1f} ms  p95 {lat['p95'] or 0:6.1f} ms",
        )
    end = now_ms()
    sent = sender.frames_sent - sent_before
    usage = cpu.stop()
    after = await node_stats() if node_stats else None
    with suppress(TimeoutError):
        await probe.settle()
    result = summarize(probe.window(start, end), sent, (end - start) / 1000)
    result["cpu"] = usage
    if not result["frames_received"]:
        raise BenchFailed(f"{path}: no frames arrived in the measured window")
    return Window(result, before, after)


async def _close_quietly(what: str, close: Callable[[], Awaitable[Any]]) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await close()
    except Exception as exc:  # closing is best effort; the measurement is already taken
        log.warning("closing the %s failed: %r", what, exc)


async def run_baseline(opts: E2eOptions) -> dict[str, Any]:
    """Two aiortc peers in this process, descriptions exchanged directly, no node."""
    say("baseline", "aiortc loopback: connecting two peers in this process")
    camera = SyntheticVideoTrack(opts.width, opts.height, opts.fps, stamp=True)
    sending = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiving = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @receiving.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video" and not remote.done():
            remote.set_result(track)

    probe: LatencyProbe | None = None
    try:
        sending.addTransceiver(camera, direction="sendonly")
        await sending.setLocalDescription(await sending.createOffer())
        await receiving.setRemoteDescription(sending.localDescription)
        await receiving.setLocalDescription(await receiving.createAnswer())
        await sending.setRemoteDescription(receiving.localDescription)
        try:
            track = await asyncio.wait_for(remote, CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise BenchFailed("baseline: the receiving peer got no video track") from None
        probe = LatencyProbe(track, "baseline")
        window = await measure("baseline", probe, camera, opts, CpuWindow({"bench_process": None}))
        window.result["codec"] = video_codec(sending.remoteDescription.sdp)
        return window.result
    finally:
        if probe is not None:
            await probe.close()
        camera.stop()
        await _close_quietly("baseline sender", sending.close)
        await _close_quietly("baseline receiver", receiving.close)


def node_window(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """The node's own stream stats: its engine counters over the window (after − before), and
    both raw `/api/streams/{stream}` answers, kept whole so new fields are recorded too."""
    if not before or not after:
        return None
    window: dict[str, Any] = {}
    for key in ("frames_in", "frames_out", "over_budget"):
        if isinstance(after.get(key), int) and isinstance(before.get(key), int):
            window[key] = after[key] - before[key]
    start_drops, end_drops = before.get("dropped") or {}, after.get("dropped") or {}
    window["dropped"] = {k: v - start_drops.get(k, 0) for k, v in end_drops.items() if v - start_drops.get(k, 0)}
    return {"window": window, "start": before, "end": after}


async def run_node(opts: E2eOptions, node: NodeProcess, http: aiohttp.ClientSession) -> dict[str, Any]:
    """Publish to the node over WHIP, watch over WHEP, measure at the viewer."""
    camera = SyntheticVideoTrack(opts.width, opts.height, opts.fps, stamp=True)
    publisher = WhipPublisher(node.url, STREAM, http, preset=opts.preset)
    viewer: WhepViewer | None = None
    probe: LatencyProbe | None = None

    async def node_stats() -> dict[str, Any] | None:
        try:
            url, limit = f"{node.url}/api/streams/{STREAM}", aiohttp.ClientTimeout(total=5)
            async with http.get(url, timeout=limit) as response:
                return await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            log.warning("node stats unavailable: %r", exc)
            return None

    try:
        say("node", f"publishing {opts.width}x{opts.height}@{opts.fps:g} with preset {opts.preset}")
        try:
            await publisher.publish(camera)
            await publisher.wait_connected(CONNECT_TIMEOUT_S)
            viewer = WhepViewer(node.url, STREAM, http)
            await viewer.watch()
            await viewer.wait_connected(CONNECT_TIMEOUT_S)
            track = await viewer.video(CONNECT_TIMEOUT_S)
        except SignallingError as exc:
            raise BenchFailed(f"node: signalling refused: {exc}") from None
        except (ConnectionError, TimeoutError) as exc:
            raise BenchFailed(f"node: peers did not connect: {exc!r}") from None
        probe = LatencyProbe(track, "node")
        cpu = CpuWindow({"node_process": node.pid, "bench_process": None})
        window = await measure("node", probe, camera, opts, cpu, node_stats)
        ingest = video_codec(publisher.pc.remoteDescription.sdp)
        egress = video_codec(viewer.pc.remoteDescription.sdp)
        window.result["codec"] = f"{ingest} in, {egress} out"
        window.result["node_stats"] = node_window(window.stats_before, window.stats_after)
        return window.result
    finally:
        if probe is not None:
            await probe.close()
        camera.stop()
        if viewer is not None:
            await _close_quietly("WHEP viewer", viewer.close)
        await _close_quietly("WHIP publisher", publisher.close)


# ---- the scenario -----------------------------------------------------------------------------
def compare_paths(node: dict[str, Any], baseline: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    added, ratio = {}, {}
    for key in ("p50", "p95", "p99", "mean"):
        n, b = node["latency_ms"][key], baseline["latency_ms"][key]
        added[key] = round(n - b, 1) if n is not None and b is not None else None
        ratio[key] = round(n / b, 2) if n is not None and b else None
    return added, ratio


async def measure_both(opts: E2eOptions) -> dict[str, Any]:
    use_host_addresses([LOOPBACK])  # this process's aiortc peers gather on loopback only
    baseline = await run_baseline(opts)
    with tempfile.TemporaryDirectory(prefix="livegen-bench-") as scratch:
        node = NodeProcess(Path(scratch), device=opts.device)
        try:
            say("node", "starting `livegen serve` in a subprocess")
            node.start()
            async with aiohttp.ClientSession() as http:
                try:
                    ready = await node.wait_ready(http, NODE_START_TIMEOUT_S)
                except NodeStartError as exc:
                    raise BenchFailed(f"node: {exc}") from None
                say("node", f"ready on {node.url} (device {ready.get('device')})")
                try:
                    result = await run_node(opts, node, http)
                except BenchFailed as exc:
                    raise BenchFailed(f"{exc}\nthe node's log ends:\n{node.log_tail()}") from None
        finally:
            code = node.stop()
        say("node", f"stopped (exit code {code})")

    added, ratio = compare_paths(result, baseline)
    return {
        "scenario": SCENARIO,
        "schema": SCHEMA,
        "date_utc": utc_now(),
        "command": opts.command(),
        "options": asdict(opts),
        "machine": machine_info(ready.get("device")),
        "baseline": baseline,
        "node": result,
        "added_latency_ms": added,
        "latency_ratio": ratio,
    }


async def _bounded(opts: E2eOptions) -> dict[str, Any]:
    """`measure_both` under an overall deadline; SIGTERM cancels it like Ctrl-C, so cleanup runs."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    with suppress(NotImplementedError, RuntimeError):  # Windows, or not the main thread
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    per_path = 2 * CONNECT_TIMEOUT_S + FIRST_FRAME_TIMEOUT_S + opts.warmup + opts.seconds + 2 * CLOSE_TIMEOUT_S
    deadline = NODE_START_TIMEOUT_S + 2 * per_path
    try:
        async with asyncio.timeout(deadline):
            return await measure_both(opts)
    except TimeoutError:
        raise BenchFailed(f"the scenario did not finish within {deadline:.0f} s") from None
    finally:
        with suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def run(args: argparse.Namespace) -> int:
    try:
        opts = E2eOptions.from_args(args)
        old = json.loads(args.compare.read_text(encoding="utf-8")) if args.compare else None
    except (OSError, ValueError) as exc:
        print(f"livegen bench: {exc}", file=sys.stderr)
        return 2
    print(f"livegen bench: {opts.command()}", flush=True)
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in noisy:  # ICE checks and RTCP chatter would bury the progress lines
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        result = asyncio.run(_bounded(opts))
    except BenchFailed as exc:
        print(f"livegen bench: failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("livegen bench: interrupted; the node was stopped", file=sys.stderr)
        return 130
    finally:
        for name, level in noisy.items():
            logging.getLogger(name).setLevel(level)

    saved = write_result(result, args.output)
    readme = refresh_readme(args.output, SCENARIO, e2e_section(load_results(args.output, SCENARIO)))
    print()
    print(e2e_table(result))
    if old is not None:
        print()
        print(comparison(old, result))
    print(f"\nwrote {saved} and {readme}")
    return 0
