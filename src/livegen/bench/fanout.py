"""`livegen bench fanout`: one publisher, many viewers; what each extra viewer costs the node.

One `SyntheticVideoTrack` (with the delay stamp) is published over WHIP to a node subprocess
(see `node`), then viewers join over WHEP in steps (`--viewers 1,10,50`: 1, then 9 more, then 40
more). Each step warms up, then measures a window: delivered frame rate at every viewer, the
node's CPU time (/proc of its pid), latency at one viewer, and the node's own stream stats. The
whole ladder runs twice in the same run, on a fresh node each: `output.mode=encode_once`, then
`per_viewer`.

Fifty aiortc viewers that each decode 720p H.264 would saturate the bench's own CPU and measure
the bench, not the node. So only the first viewer decodes (it carries the latency probe); every
other viewer's RTP receiver is replaced by an `RtpFrameCounter`, which counts frames from their
RTP marker bits and never hands anything to aiortc's decoder thread (which then sleeps on its
empty queue). The bench's own CPU is measured in every window, whole and for two of its threads:
the event loop (it receives and decrypts every viewer's packets, so it is where a counting
viewer costs) and the decoding viewer's decoder thread. If the loop nears a full core, the
numbers describe the bench, not the node.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
from bisect import bisect_left
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtpPacket, pack_remb_fci

from livegen.bench.cpu import CpuWindow
from livegen.bench.e2e import NOISY_LOGGERS, BenchFailed, video_codec
from livegen.bench.node import LOOPBACK, NodeProcess, NodeStartError
from livegen.bench.options import FANOUT_SCENARIO, FanoutOptions
from livegen.bench.probe import LatencyProbe, summarize
from livegen.bench.report import (
    fanout_section,
    fanout_table,
    load_results,
    machine_info,
    refresh_readme,
    utc_now,
    write_result,
)
from livegen.rtc.ice import use_host_addresses
from livegen.testing.clients import SignallingError, WhepViewer, WhipPublisher
from livegen.testing.tracks import VIDEO_CLOCK, SyntheticVideoTrack, now_ms

log = logging.getLogger(__name__)

SCHEMA = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
STREAM = "bench"
MODES = ("encode_once", "per_viewer")
NODE_START_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 20.0
CONNECT_BATCH = 10
"""Viewers whose signalling and ICE/DTLS run at once; more only makes each handshake slower."""
FIRST_FRAME_TIMEOUT_S = 15.0
STATS_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 5.0
PROGRESS_EVERY_S = 5.0
FULL_RATE = 0.95
"""A viewer gets the full frame rate when it receives this share of `--fps` (not of the frames
the publisher managed to send: a starved publisher is a miss too)."""
REMB_INTERVAL_MS = 500
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


def say(mode: str, viewers: int | None, message: str) -> None:
    where = f"{mode} ×{viewers}" if viewers is not None else mode
    print(f"[{where:16}] {message}", flush=True)


# ---- a viewer that counts frames without decoding them ------------------------------------------
class RtpFrameCounter:
    """Counts one viewer's video frames as their last RTP packet (marker bit set) arrives.

    Installed on the receiver instance in place of aiortc's `_handle_rtp_packet`, so no packet is
    depacketized, reassembled or queued for the decoder thread. What the node's sender listens
    to is kept: the statistics aiortc's receiver reports are built from (packets, loss, jitter)
    and, with `remb`, REMB: per_viewer's aiortc encoders set their bitrate from it, while
    encode_once's senders have no encoder to steer, so there it is left out (aiortc's estimator
    was a third of a counting viewer's cost in a profile). The estimator asks for a REMB on
    nearly every packet once it sees queueing, as on a busy 2-core machine; it is sent at most
    every `REMB_INTERVAL_MS`, carrying the newest estimate, about a browser's pace. NACK and PLI
    are not sent: a lost packet is counted, not repaired.
    """

    def __init__(self, receiver: RTCRtpReceiver, remb: bool):
        self.receiver = receiver
        self.arrivals: list[int] = []
        self.packets = 0
        self.payload_bytes = 0
        # aiortc keeps these private; without them the counter still counts, the node just
        # hears no receiver reports or REMB from this viewer
        self._streams: dict[int, StreamStatistics] | None = getattr(receiver, "_RTCRtpReceiver__remote_streams", None)
        self._estimator = getattr(receiver, "_RTCRtpReceiver__remote_bitrate_estimator", None) if remb else None
        self.reports = self._streams is not None
        self.remb = self._estimator is not None
        self.rembs_sent = 0
        self._last_remb_ms = -REMB_INTERVAL_MS
        receiver._handle_rtp_packet = self.handle  # type: ignore[method-assign]

    async def handle(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if not packet.payload:
            return
        self.packets += 1
        self.payload_bytes += len(packet.payload)
        if packet.marker:
            self.arrivals.append(now_ms())
        if self._streams is not None:
            stream = self._streams.get(packet.ssrc)
            if stream is None:
                stream = self._streams[packet.ssrc] = StreamStatistics(VIDEO_CLOCK)
            stream.add(packet)
        if self._estimator is not None and packet.extensions.abs_send_time is not None:
            remb = self._estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            rtcp_ssrc = getattr(self.receiver, "_RTCRtpReceiver__rtcp_ssrc", None)
            if remb is not None and rtcp_ssrc is not None and arrival_time_ms - self._last_remb_ms >= REMB_INTERVAL_MS:
                self._last_remb_ms = arrival_time_ms
                self.rembs_sent += 1
                feedback = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb))
                await self.receiver._send_rtcp(feedback)

    def frames_between(self, start_ms: int, end_ms: int) -> int:
        return bisect_left(self.arrivals, end_ms) - bisect_left(self.arrivals, start_ms)

    @property
    def packets_lost(self) -> int:
        return sum(max(0, s.packets_lost) for s in (self._streams or {}).values())


def video_receiver(viewer: WhepViewer) -> RTCRtpReceiver:
    return next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")


def decoder_thread_id(receiver: RTCRtpReceiver) -> int | None:
    """The OS thread id of aiortc's decoder thread for `receiver`, once it runs."""
    thread = getattr(receiver, "_RTCRtpReceiver__decoder_thread", None)
    return getattr(thread, "native_id", None)


def thread_cpu_seconds(tid: int | None) -> float | None:
    """User + system CPU seconds of one thread of this process (Linux), else None."""
    if tid is None:
        return None
    try:
        with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Audience:
    """The viewers watching so far: the first decodes (latency), the others count frames."""

    decoding: WhepViewer | None = None
    probe: LatencyProbe | None = None
    counting: list[tuple[WhepViewer, RtpFrameCounter]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return (self.decoding is not None) + len(self.counting)

    def viewers(self) -> list[WhepViewer]:
        return ([self.decoding] if self.decoding is not None else []) + [v for v, _ in self.counting]


async def _close_peer(viewer: WhepViewer | WhipPublisher) -> None:
    """DELETE the session if the node answers; close the peer in any case (its threads end)."""
    with suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await viewer.close()
    if viewer.pc.connectionState != "closed":
        with suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await viewer.pc.close()


async def _connect_decoding(node: NodeProcess, http: aiohttp.ClientSession) -> tuple[WhepViewer, MediaStreamTrack]:
    viewer = WhepViewer(node.url, STREAM, http)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await viewer.watch()
            await viewer.wait_connected(CONNECT_TIMEOUT_S)
            return viewer, await viewer.video(CONNECT_TIMEOUT_S)
    except BaseException:
        await _close_peer(viewer)
        raise


async def _connect_counting(
    node: NodeProcess, http: aiohttp.ClientSession, remb: bool
) -> tuple[WhepViewer, RtpFrameCounter]:
    viewer = WhepViewer(node.url, STREAM, http)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await viewer.watch()
            # the receiver exists now, and no RTP arrives before ICE and DTLS are done
            counter = RtpFrameCounter(video_receiver(viewer), remb)
            await viewer.wait_connected(CONNECT_TIMEOUT_S)
            return viewer, counter
    except BaseException:
        await _close_peer(viewer)
        raise


async def grow(audience: Audience, target: int, node: NodeProcess, http: aiohttp.ClientSession, remb: bool) -> None:
    """Add viewers until `target` watch, `CONNECT_BATCH` at a time; failures are noted, not fatal
    (a node at capacity refuses some), except for the decoding viewer."""
    if audience.decoding is None:
        try:
            viewer, track = await _connect_decoding(node, http)
        except SignallingError as exc:
            raise BenchFailed(f"the decoding viewer was refused: {exc}") from None
        except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
            raise BenchFailed(f"the decoding viewer did not connect: {exc!r}") from None
        audience.decoding, audience.probe = viewer, LatencyProbe(track, "fanout")
        audience.probe.start()
    while audience.size < target:
        batch = min(CONNECT_BATCH, target - audience.size)
        results = await asyncio.gather(
            *(_connect_counting(node, http, remb) for _ in range(batch)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, tuple):
                audience.counting.append(result)
            elif isinstance(result, (SignallingError, ConnectionError, TimeoutError, aiohttp.ClientError)):
                audience.failed.append(repr(result))
                log.warning("a viewer did not connect: %r", result)
            else:
                raise result
        if not any(isinstance(r, tuple) for r in results):
            break  # a whole batch failed: measure the viewers there are


async def first_frames(audience: Audience, timeout: float) -> int:
    """Wait (bounded) until every viewer has had a frame; how many have."""
    assert audience.probe is not None
    async with asyncio.timeout(timeout):
        await audience.probe.first_frame.wait()
    deadline = now_ms() + timeout * 1000
    while now_ms() < deadline and any(not c.arrivals for _, c in audience.counting):
        await asyncio.sleep(0.1)
    return 1 + sum(bool(c.arrivals) for _, c in audience.counting)


# ---- measuring one step -----------------------------------------------------------------------
async def stream_stats(node: NodeProcess, http: aiohttp.ClientSession) -> dict[str, Any] | None:
    try:
        limit = aiohttp.ClientTimeout(total=STATS_TIMEOUT_S)
        async with http.get(f"{node.url}/api/streams/{STREAM}", timeout=limit) as response:
            return await response.json() if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        log.warning("node stats unavailable: %r", exc)
        return None


def stats_window(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """The node's counters over the window (after − before) and its last answer, kept whole."""
    if not before or not after:
        return None
    window: dict[str, Any] = {}
    for key in ("frames_in", "frames_out", "over_budget"):
        if isinstance(after.get(key), int) and isinstance(before.get(key), int):
            window[key] = after[key] - before[key]
    start_drops, end_drops = before.get("dropped") or {}, after.get("dropped") or {}
    window["dropped"] = {k: v - start_drops.get(k, 0) for k, v in end_drops.items() if v - start_drops.get(k, 0)}
    out_before, out_after = before.get("output") or {}, after.get("output") or {}
    window["output"] = {
        key: out_after[key] - out_before[key]
        for key in OUTPUT_COUNTERS
        if isinstance(out_after.get(key), int) and isinstance(out_before.get(key), int)
    }
    return {"window": window, "end": after}


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}


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
    threads = {
        "decoder_thread": decoder_thread_id(video_receiver(audience.decoding)),
        "bench_loop": threading.get_native_id(),
    }
    cpu = CpuWindow({"node_process": node.pid, "bench_process": None})
    lost_before = [c.packets_lost for _, c in audience.counting]
    received_before = [(c.packets, c.payload_bytes) for _, c in audience.counting]

    before = await stream_stats(node, http)
    sent_before = camera.frames_sent
    cpu.start()
    threads_before = {name: thread_cpu_seconds(tid) for name, tid in threads.items()}
    start = now_ms()
    ticks = max(1, math.ceil(opts.seconds / PROGRESS_EVERY_S))
    for tick in range(1, ticks + 1):
        elapsed = min(opts.seconds, tick * PROGRESS_EVERY_S)
        await asyncio.sleep(max(0.0, start + elapsed * 1000 - now_ms()) / 1000)
        if probe.ended:
            raise BenchFailed(f"{mode} ×{n}: the decoding viewer's track ended")
        seconds = max(now_ms() - start, 1) / 1000
        fps = [len(probe.window(start, now_ms())) / seconds]
        fps += [c.frames_between(start, now_ms()) / seconds for _, c in audience.counting]
        say(
            mode,
            n,
            f"{elapsed:4g}/{opts.seconds:g} s  fps per viewer min {min(fps):5.1f}"
            f"  median {statistics.median(fps):5.1f}",
        )
    end = now_ms()
    usage = cpu.stop()
    for name, tid in threads.items():  # where the bench's own time goes (see the module docstring)
        t0, t1 = threads_before[name], thread_cpu_seconds(tid)
        usage[f"{name}_pct"] = (
            round(100 * (t1 - t0) / max((end - start) / 1000, 1e-3), 1) if t0 is not None and t1 is not None else None
        )
    sent = camera.frames_sent - sent_before
    after = await stream_stats(node, http)
    with suppress(TimeoutError):
        await probe.settle()

    seconds = (end - start) / 1000
    decoding = summarize(probe.window(start, end), sent, seconds)
    frames = [decoding["frames_received"]] + [c.frames_between(start, end) for _, c in audience.counting]
    fps = [f / seconds for f in frames]
    lost = [c.packets_lost - b for (_, c), b in zip(audience.counting, lost_before, strict=True)]
    received = [
        (c.packets - p, c.payload_bytes - b) for (_, c), (p, b) in zip(audience.counting, received_before, strict=True)
    ]
    full = FULL_RATE * opts.fps * seconds
    return {
        "viewers": n,
        "seconds": round(seconds, 2),
        "frames_sent": sent,
        "sent_fps": round(sent / seconds, 2),
        "fps_per_viewer": spread(fps),
        "frames_per_viewer": frames,
        "viewers_at_full_rate": sum(f >= full for f in frames),
        "counting_viewer_kbps": spread([8 * b / seconds / 1000 for _, b in received]),
        "counting_viewer_packets_per_s": spread([p / seconds for p, _ in received]),
        "counting_viewers_packets_lost": sum(lost),
        "latency_ms": decoding["latency_ms"],
        "decoding_viewer": decoding,
        "cpu": usage,
        "node_stats": stats_window(before, after),
    }


# ---- one output mode ----------------------------------------------------------------------------
async def run_mode(mode: str, opts: FanoutOptions, http: aiohttp.ClientSession) -> tuple[dict[str, Any], str | None]:
    """A fresh node in `mode`, one publisher, the viewer ladder; the node always stopped."""
    settings = {"output": {"mode": mode}, "rtc": {"max_viewers_per_stream": max(opts.viewers)}}
    with tempfile.TemporaryDirectory(prefix="livegen-bench-") as scratch:
        node = NodeProcess(Path(scratch), device=opts.device, settings=settings)
        camera = SyntheticVideoTrack(opts.width, opts.height, opts.fps, stamp=True)
        publisher: WhipPublisher | None = None
        audience = Audience()
        try:
            say(mode, None, "starting `livegen serve` in a subprocess")
            node.start()
            try:
                ready = await node.wait_ready(http, NODE_START_TIMEOUT_S)
            except NodeStartError as exc:
                raise BenchFailed(f"{mode}: {exc}") from None
            say(
                mode,
                None,
                f"ready on {node.url} (device {ready.get('device')}); publishing"
                f" {opts.width}x{opts.height}@{opts.fps:g} with preset {opts.preset}",
            )
            publisher = WhipPublisher(node.url, STREAM, http, preset=opts.preset)
            try:
                await publisher.publish(camera)
                await publisher.wait_connected(CONNECT_TIMEOUT_S)
            except SignallingError as exc:
                raise BenchFailed(f"{mode}: the publish was refused: {exc}") from None
            except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
                raise BenchFailed(f"{mode}: the publisher did not connect: {exc!r}") from None

            steps = []
            for target in opts.viewers:
                say(mode, target, f"connecting {target - audience.size} more viewer(s)")
                await grow(audience, target, node, http, remb=mode == "per_viewer")
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
            result = {
                "codec": f"{ingest} in, {egress} out",
                "counting_viewers_send_reports": all(c.reports for _, c in audience.counting),
                "counting_viewers_send_remb": all(c.remb for _, c in audience.counting),
                "counting_viewer_rembs_sent": sum(c.rembs_sent for _, c in audience.counting),
                "connect_failures": audience.failed[:5],
                "steps": steps,
                "cpu_per_10_viewers_pct": per_10_viewers(steps, "node_process_pct"),
                "cpu_per_10_viewers_by_step_pct": per_10_viewers_by_step(steps, "node_process_pct"),
                "bench_cpu_per_10_viewers_pct": per_10_viewers(steps, "bench_process_pct"),
            }
            return result, ready.get("device")
        except BenchFailed as exc:
            raise BenchFailed(f"{exc}\nthe node's log ends:\n{node.log_tail()}") from None
        finally:
            if audience.probe is not None:
                await audience.probe.close()
            camera.stop()
            await asyncio.gather(*(_close_peer(v) for v in audience.viewers()))
            if publisher is not None:
                await _close_peer(publisher)
            code = node.stop()
            say(mode, None, f"node stopped (exit code {code})")


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
        "scenario": FANOUT_SCENARIO,
        "schema": SCHEMA,
        "date_utc": utc_now(),
        "command": opts.command(),
        "options": asdict(opts),
        "machine": machine_info(device),
        "modes": modes,
        "cpu_ratio_once_to_per_viewer": cpu_ratios(modes),
        "goal": goal(modes),
    }


def deadline_s(opts: FanoutOptions) -> float:
    """A bound on the whole run, generous enough for a node slowed down by per-viewer encoding."""
    batches = sum(math.ceil(max(1, b - a) / CONNECT_BATCH) for a, b in itertools.pairwise((0, *opts.viewers)))
    step = FIRST_FRAME_TIMEOUT_S + opts.warmup + opts.seconds + 2 * STATS_TIMEOUT_S
    per_mode = NODE_START_TIMEOUT_S + 2 * CONNECT_TIMEOUT_S + batches * CONNECT_TIMEOUT_S + len(opts.viewers) * step
    return len(MODES) * (per_mode + 4 * CLOSE_TIMEOUT_S)


async def _bounded(opts: FanoutOptions) -> dict[str, Any]:
    """`measure_modes` under an overall deadline; SIGTERM cancels it like Ctrl-C, so cleanup runs."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    with suppress(NotImplementedError, RuntimeError):  # Windows, or not the main thread
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    deadline = deadline_s(opts)
    try:
        async with asyncio.timeout(deadline):
            return await measure_modes(opts)
    except TimeoutError:
        raise BenchFailed(f"the scenario did not finish within {deadline:.0f} s") from None
    finally:
        with suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def run(args: argparse.Namespace) -> int:
    try:
        opts = FanoutOptions.from_args(args)
    except ValueError as exc:
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
    section = fanout_section(load_results(args.output, FANOUT_SCENARIO))
    readme = refresh_readme(args.output, FANOUT_SCENARIO, section)
    print()
    print(fanout_table(result))
    print(f"\nwrote {saved} and {readme}")
    return 0
