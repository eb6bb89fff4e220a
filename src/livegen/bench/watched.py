"""Streams the bench publishes to its node and watches back, for the scenarios that keep streams
up for a while (soak, neighbour, overload): how one is set up and closed, and what a measured
window of it reads.

A `WatchedStream` is a `SyntheticVideoTrack` published over WHIP at a preset, and one WHEP
viewer. Either the viewer decodes (it carries a `LatencyProbe`: publisher → viewer latency, as
e2e measures it, from the camera's delay stamp), or the stream is only measured on the node's
figures: then its publisher replays a loop encoded once (`peers.send_replayed`) and its viewer
only counts frames from RTP marker bits (an `RtpFrameCounter`, as fanout's extra viewers do).
Such a stream costs the node what a remote camera and viewer would, and the bench close to
nothing, so the bench's own peers do not take the CPU the node's streams are measured on.

`sample_window` reads the node's stats of every stream at the start of a window, every few
seconds inside it and at its end; `node_figures` turns that into what a result records. The
node's latency percentiles are its last `LATENCY_WINDOW` frames, not the window's: each result
says whether the window held that many frames (`percentiles_within_window`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from livegen.bench.audience import RtpFrameCounter, video_receiver
from livegen.bench.driver import BenchFailed
from livegen.bench.node import NodeProcess, counters_window
from livegen.bench.peers import FrameClock, close_client, send_like_the_node, send_replayed, video_codec
from livegen.bench.probe import LatencyProbe, summarize
from livegen.config import OutputSettings
from livegen.observability.latency import DEFAULT_WINDOW as LATENCY_WINDOW
from livegen.testing.clients import SignallingError, WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack, now_ms

PUBLISH_CODEC = "H264"

CONNECT_TIMEOUT_S = 15.0
FIRST_FRAME_TIMEOUT_S = 15.0
SAMPLED = ("fps_in", "fps_out", "latency_ms", "node_latency_ms", "over_budget", "degraded", "dropped", "load")
"""The fields of a stream's stats kept in each reading (those the node reports)."""


@dataclass
class WatchedStream:
    name: str
    camera: SyntheticVideoTrack | FrameClock
    """What the publisher sends: the camera itself, or the clock of its replayed loop."""
    publisher: WhipPublisher
    viewer: WhepViewer | None = None
    probe: LatencyProbe | None = None
    counter: RtpFrameCounter | None = None

    @classmethod
    async def open(
        cls,
        node: NodeProcess,
        http: aiohttp.ClientSession,
        name: str,
        size: tuple[int, int, float],
        preset: str,
        decode: bool,
    ) -> WatchedStream:
        """Publish `name` at `preset` (`size` is width, height, fps) and watch it; a refusal or
        a peer that does not connect is a `BenchFailed`. Nothing is left open on failure."""
        width, height, fps = size
        camera = SyntheticVideoTrack(width, height, fps, stamp=decode)
        stream = cls(name, camera, WhipPublisher(node.url, name, http, preset=preset))
        try:
            async with asyncio.timeout(3 * CONNECT_TIMEOUT_S):
                # H.264 with the node's own x264 settings, as OBS would send: aiortc's default
                # VP8 encoder costs the bench several times more CPU per stream on 2 cores
                if decode:
                    send_like_the_node(stream.publisher.pc, camera, PUBLISH_CODEC, OutputSettings())
                else:
                    stream.camera = await send_replayed(stream.publisher.pc, camera, PUBLISH_CODEC, OutputSettings())
                await stream.publisher.publish()
                await stream.publisher.wait_connected(CONNECT_TIMEOUT_S)
                stream.viewer = WhepViewer(node.url, name, http)
                await stream.viewer.watch()
                if not decode:  # the receiver exists now, and no RTP arrives before ICE and DTLS are done
                    stream.counter = RtpFrameCounter(video_receiver(stream.viewer))
                await stream.viewer.wait_connected(CONNECT_TIMEOUT_S)
                if decode:
                    stream.probe = LatencyProbe(await stream.viewer.video(CONNECT_TIMEOUT_S), name)
                    stream.probe.start()
        except SignallingError as exc:
            await stream.close()
            raise BenchFailed(f"{name}: signalling refused: {exc}") from None
        except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
            await stream.close()
            raise BenchFailed(f"{name}: peers did not connect: {exc!r}") from None
        except BaseException:
            await stream.close()
            raise
        return stream

    async def first_frame(self, timeout: float = FIRST_FRAME_TIMEOUT_S) -> None:
        try:
            async with asyncio.timeout(timeout):
                if self.probe is not None:
                    await self.probe.first_frame.wait()
                while self.counter is not None and not self.counter.arrivals:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise BenchFailed(f"{self.name}: no video frame reached the viewer within {timeout:.0f} s") from None

    def check_alive(self) -> None:
        if self.probe is not None and self.probe.ended:
            raise BenchFailed(f"{self.name}: the viewer's track ended during the measurement")

    def received(self, start_ms: int, end_ms: int) -> int:
        if self.probe is not None:
            return len(self.probe.window(start_ms, end_ms))
        return self.counter.frames_between(start_ms, end_ms) if self.counter is not None else 0

    async def viewer_figures(self, start_ms: int, end_ms: int, frames_sent: int) -> dict[str, Any]:
        """What the viewer saw of `start_ms`..`end_ms`: frames and rate, and with a decoding
        viewer the latency percentiles and losses (`probe.summarize`)."""
        seconds = (end_ms - start_ms) / 1000
        if self.probe is not None:
            with suppress(TimeoutError):
                await self.probe.settle()
            return summarize(self.probe.window(start_ms, end_ms), frames_sent, seconds)
        frames = self.received(start_ms, end_ms)
        return {
            "frames_sent": frames_sent,
            "frames_received": frames,
            "delivered_fps": round(frames / seconds, 2) if seconds > 0 else None,
            "frames_lost": max(0, frames_sent - frames),
        }

    def codec(self) -> str:
        ingest = video_codec(self.publisher.pc.remoteDescription.sdp if self.publisher.pc.remoteDescription else None)
        egress = None
        if self.viewer is not None and self.viewer.pc.remoteDescription is not None:
            egress = video_codec(self.viewer.pc.remoteDescription.sdp)
        return f"{ingest} in, {egress} out"

    async def close(self) -> None:
        if self.probe is not None:
            await self.probe.close()
        self.camera.stop()
        if self.viewer is not None:
            await close_client(f"{self.name} WHEP viewer", self.viewer)
        await close_client(f"{self.name} WHIP publisher", self.publisher)


# ---- a measured window ------------------------------------------------------------------------
@dataclass
class Sampled:
    """The node's stats of each stream over one window: its answers at the start and the end
    (kept whole), the readings in between (`SAMPLED` fields, `t_s` from the start)."""

    start_ms: int
    end_ms: int = 0
    before: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    after: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    readings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    frames_sent: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


def reading(stats: dict[str, Any], t_s: float) -> dict[str, Any]:
    return {"t_s": round(t_s, 1), **{key: stats[key] for key in SAMPLED if key in stats}}


async def sample_window(
    node: NodeProcess,
    http: aiohttp.ClientSession,
    streams: list[WatchedStream],
    seconds: float,
    every: float,
    progress: Callable[[float, dict[str, dict[str, Any] | None]], None] | None = None,
) -> Sampled:
    """Measure `seconds`: the node's stats of every stream at the start, every `every` seconds
    and at the end (`progress` hears each reading); frames sent per stream over the window."""
    names = [s.name for s in streams]

    async def read_all() -> dict[str, dict[str, Any] | None]:
        answers = await asyncio.gather(*(node.stream_stats(http, name) for name in names))
        return dict(zip(names, answers, strict=True))

    window = Sampled(start_ms=0)
    window.before = await read_all()
    sent_before = {s.name: s.camera.frames_sent for s in streams}
    window.start_ms = start = now_ms()
    window.readings = {name: [] for name in names}
    tick = 0
    while True:
        tick += 1
        elapsed = min(seconds, tick * every)
        await asyncio.sleep(max(0.0, start + elapsed * 1000 - now_ms()) / 1000)
        for stream in streams:
            stream.check_alive()
        answers = await read_all()
        t_s = (now_ms() - start) / 1000
        for name, stats in answers.items():
            if stats is not None:
                window.readings[name].append(reading(stats, t_s))
        if progress is not None:
            progress(elapsed, answers)
        if elapsed >= seconds:
            window.end_ms = now_ms()
            window.after = answers
            break
    window.frames_sent = {s.name: s.camera.frames_sent - sent_before[s.name] for s in streams}
    return window


def node_figures(window: Sampled, name: str) -> dict[str, Any] | None:
    """The node's figures of stream `name` over `window`: frames out per second over the whole
    window (from its counters) beside its own fps at the end, the latency percentiles of its
    last frames at the end, the counters and tallies over the window, the `load` it reports."""
    before, after = window.before.get(name), window.after.get(name)
    if not before or not after:
        return None
    counters = counters_window(before, after)
    seconds = max(window.seconds, 1e-3)
    frames_out = counters.get("frames_out")
    return {
        "fps_out": after.get("fps_out"),
        "fps_out_window": round(frames_out / seconds, 2) if frames_out is not None else None,
        "fps_in_window": round(counters["frames_in"] / seconds, 2) if "frames_in" in counters else None,
        "node_latency_ms": after.get("node_latency_ms"),
        "latency_ms": after.get("latency_ms"),
        "percentiles_within_window": frames_out is not None and frames_out >= LATENCY_WINDOW,
        "window": counters,
        "load": after.get("load"),
    }


async def stream_figures(window: Sampled, stream: WatchedStream, where: str) -> dict[str, Any]:
    """One stream's figures over `window`: the rate the bench sent, what its viewer got, the
    node's own figures and readings; `BenchFailed` (naming `where`) when no frame arrived."""
    sent = window.frames_sent[stream.name]
    viewer = await stream.viewer_figures(window.start_ms, window.end_ms, sent)
    if not viewer["frames_received"]:
        raise BenchFailed(f"{where}no frame of {stream.name} reached its viewer")
    return {
        "sent_fps": round(sent / max(window.seconds, 1e-3), 2),
        "viewer": viewer,
        "node": node_figures(window, stream.name),
        "readings": window.readings[stream.name],
    }


def p95(summary: Any) -> float | None:
    return summary.get("p95") if isinstance(summary, dict) else None
