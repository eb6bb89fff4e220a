"""`livegen bench e2e`: publisher → viewer latency through a real node, against a plain aiortc
loopback measured in the same run.

Both paths send the same `SyntheticVideoTrack` with the delay stamp and read the stamp back at
the receiver (see `probe`). The *baseline* path is two aiortc peers in this process that exchange
descriptions directly; the *node* path publishes over WHIP to `livegen serve` started as a
subprocess (see `node`) and watches over WHEP. Each path runs a warm-up, then a measured window;
the node path also records the node's own stream stats and CPU time over that window, including
the frames it dropped, degraded or showed a fallback for.

Like for like: the baseline sends what the node sends its viewers — the codec the node prefers
(H.264), encoded with the node's encoder and output settings, not aiortc's defaults (VP8, or
libx264 at its `medium` preset) — so *added* is what the node adds, not a different encoder. The
result records both paths' codec and encoder settings, and whether they matched.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection

from livegen.bench import e2e_report
from livegen.bench.cpu import CpuWindow
from livegen.bench.driver import BenchFailed, Scenario, bounded
from livegen.bench.encoding import same_encoder
from livegen.bench.node import (
    LOOPBACK,
    NODE_START_TIMEOUT_S,
    STREAM,
    NodeProcess,
    counters_window,
    started_node,
)
from livegen.bench.options import E2eOptions
from livegen.bench.peers import (
    CLOSE_TIMEOUT_S,
    close_client,
    close_quietly,
    send_like_the_node,
    video_codec,
)
from livegen.bench.probe import LatencyProbe, latencies, percentiles, summarize
from livegen.bench.report import result_head
from livegen.config import OutputSettings
from livegen.rtc.aiortc_adapter import use_host_addresses
from livegen.testing.clients import SignallingError, WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack, now_ms

CONNECT_TIMEOUT_S = 15.0
FIRST_FRAME_TIMEOUT_S = 15.0
NODE_OUTPUT = OutputSettings()
"""The output settings of the bench's node (it sets no `output.*`), which the baseline sends with."""


def say(path: str, message: str) -> None:
    print(f"[{path:8}] {message}", flush=True)


# ---- measuring one path -----------------------------------------------------------------------
@dataclass
class Window:
    result: dict[str, Any]
    stats_before: dict[str, Any] | None
    stats_after: dict[str, Any] | None


async def measure_path(
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


async def run_baseline(opts: E2eOptions) -> dict[str, Any]:
    """Two aiortc peers in this process, descriptions exchanged directly, no node; the sender
    sends the node's viewer codec with the node's encoder settings."""
    codec = NODE_OUTPUT.codecs[0]
    say("baseline", f"aiortc loopback: connecting two peers in this process ({codec}, the node's encoder settings)")
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
        encoder = send_like_the_node(sending, camera, codec, NODE_OUTPUT)
        await sending.setLocalDescription(await sending.createOffer())
        await receiving.setRemoteDescription(sending.localDescription)
        await receiving.setLocalDescription(await receiving.createAnswer())
        await sending.setRemoteDescription(receiving.localDescription)
        try:
            track = await asyncio.wait_for(remote, CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise BenchFailed("baseline: the receiving peer got no video track") from None
        probe = LatencyProbe(track, "baseline")
        window = await measure_path("baseline", probe, camera, opts, CpuWindow({"bench_process": None}))
        window.result["codec"] = video_codec(sending.remoteDescription.sdp)
        window.result["encoder"] = encoder.describe()
        return window.result
    finally:
        if probe is not None:
            await probe.close()
        camera.stop()
        await close_quietly("baseline sender", sending.close)
        await close_quietly("baseline receiver", receiving.close)


def node_window(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """The node's own stream stats: its engine counters over the window (after − before), and
    both raw `/api/streams/{stream}` answers, kept whole so new fields are recorded too."""
    if not before or not after:
        return None
    return {"window": counters_window(before, after), "start": before, "end": after}


async def run_node(opts: E2eOptions, node: NodeProcess, http: aiohttp.ClientSession) -> dict[str, Any]:
    """Publish to the node over WHIP, watch over WHEP, measure at the viewer."""
    camera = SyntheticVideoTrack(opts.width, opts.height, opts.fps, stamp=True)
    publisher = WhipPublisher(node.url, STREAM, http, preset=opts.preset)
    viewer: WhepViewer | None = None
    probe: LatencyProbe | None = None
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
        window = await measure_path("node", probe, camera, opts, cpu, lambda: node.stream_stats(http))
        ingest = video_codec(publisher.pc.remoteDescription.sdp)
        egress = video_codec(viewer.pc.remoteDescription.sdp)
        window.result["codec"] = f"{ingest} in, {egress} out"
        window.result["egress_codec"] = egress
        window.result["node_stats"] = node_window(window.stats_before, window.stats_after)
        output = (window.stats_after or {}).get("output") or {}
        window.result["encoder"] = (output.get("encoder_settings") or {}).get(egress)
        return window.result
    finally:
        if probe is not None:
            await probe.close()
        camera.stop()
        if viewer is not None:
            await close_client("WHEP viewer", viewer)
        await close_client("WHIP publisher", publisher)


# ---- the scenario -----------------------------------------------------------------------------
def like_for_like(node: dict[str, Any], baseline: dict[str, Any]) -> dict[str, bool | None]:
    """Whether the baseline sent what the node sent its viewer: the codec, and the encoder's
    settings (`encoding.same_encoder`; None when the node did not report them)."""
    return {
        "codec": baseline.get("codec") == node.get("egress_codec"),
        "encoder": same_encoder(baseline.get("encoder"), node.get("encoder")),
    }


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
    async with (
        aiohttp.ClientSession() as http,
        started_node(http, "node", lambda message: say("node", message), device=opts.device) as (node, ready),
    ):
        say("node", f"ready on {node.url} (device {ready.get('device')})")
        result = await run_node(opts, node, http)

    added, ratio = compare_paths(result, baseline)
    return {
        **result_head(opts.scenario, opts.command(), asdict(opts), ready.get("device")),
        "baseline": baseline,
        "node": result,
        "added_latency_ms": added,
        "latency_ratio": ratio,
        "like_for_like": like_for_like(result, baseline),
    }


def deadline_s(opts: E2eOptions) -> float:
    """A bound on the whole run: the node's start and both paths at their slowest."""
    per_path = 2 * CONNECT_TIMEOUT_S + FIRST_FRAME_TIMEOUT_S + opts.warmup + opts.seconds + 2 * CLOSE_TIMEOUT_S
    return NODE_START_TIMEOUT_S + 2 * per_path


SCENARIO = Scenario(
    name=E2eOptions.scenario,
    options=E2eOptions.from_args,
    measure=bounded(measure_both, deadline_s),
    section=e2e_report.section,
    table=e2e_report.table,
    compare=e2e_report.compare,
)
