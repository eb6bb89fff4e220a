"""The fanout scenario's viewers: one that decodes (it carries the latency probe) and many that
only count frames, joining a node's stream in batches.

Fifty aiortc viewers that each decode 720p H.264 would saturate the bench's own CPU and measure
the bench, not the node. So only the first viewer decodes; every other viewer's RTP receiver is
replaced by an `RtpFrameCounter`, which counts frames from their RTP marker bits and never hands
anything to aiortc's decoder thread (which then sleeps on its empty queue).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from dataclasses import dataclass, field

import aiohttp
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket

from livegen.bench.driver import BenchFailed
from livegen.bench.node import STREAM, NodeProcess
from livegen.bench.peers import close_client
from livegen.bench.probe import LatencyProbe
from livegen.rtc import aiortc_adapter
from livegen.testing.clients import SignallingError, WhepViewer
from livegen.testing.tracks import VIDEO_CLOCK, now_ms

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0
CONNECT_BATCH = 10
"""Viewers whose signalling and ICE/DTLS run at once; more only makes each handshake slower."""


class RtpFrameCounter:
    """Counts one viewer's video frames as their last RTP packet (marker bit set) arrives.

    Installed on the receiver instance in place of aiortc's RTP handler, so no packet is
    depacketized, reassembled or queued for the decoder thread. The statistics aiortc's receiver
    reports are built from (packets, loss, jitter) are kept, so the node's sender hears receiver
    reports as from a real viewer. No REMB is sent: in neither output mode does the node's
    bitrate follow it (per_viewer encodes with encode_once's fixed settings), and aiortc's
    estimator was a third of a counting viewer's cost in a profile. NACK and PLI are not sent
    either: a lost packet is counted, not repaired.
    """

    def __init__(self, receiver: RTCRtpReceiver):
        self.receiver = receiver
        self.arrivals: list[int] = []
        self.packets = 0
        self.payload_bytes = 0
        # aiortc keeps these private; without them the counter still counts, the node just
        # hears no receiver reports from this viewer
        self._streams: dict[int, StreamStatistics] | None = aiortc_adapter.receiver_statistics(receiver)
        self.reports = self._streams is not None
        aiortc_adapter.replace_rtp_handler(receiver, self.handle)

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

    def frames_between(self, start_ms: int, end_ms: int) -> int:
        return bisect_left(self.arrivals, end_ms) - bisect_left(self.arrivals, start_ms)

    @property
    def packets_lost(self) -> int:
        return sum(max(0, s.packets_lost) for s in (self._streams or {}).values())


def video_receiver(viewer: WhepViewer) -> RTCRtpReceiver:
    return next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")


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

    @property
    def counters(self) -> list[RtpFrameCounter]:
        return [counter for _, counter in self.counting]

    def viewers(self) -> list[WhepViewer]:
        return ([self.decoding] if self.decoding is not None else []) + [v for v, _ in self.counting]

    async def close(self) -> None:
        """Stop the probe and close every viewer (all at once: each close may wait for the node)."""
        if self.probe is not None:
            await self.probe.close()
        await asyncio.gather(*(close_client("WHEP viewer", v) for v in self.viewers()))


async def _connect_decoding(node: NodeProcess, http: aiohttp.ClientSession) -> tuple[WhepViewer, MediaStreamTrack]:
    viewer = WhepViewer(node.url, STREAM, http)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await viewer.watch()
            await viewer.wait_connected(CONNECT_TIMEOUT_S)
            return viewer, await viewer.video(CONNECT_TIMEOUT_S)
    except BaseException:
        await close_client("WHEP viewer", viewer)
        raise


async def _connect_counting(node: NodeProcess, http: aiohttp.ClientSession) -> tuple[WhepViewer, RtpFrameCounter]:
    viewer = WhepViewer(node.url, STREAM, http)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await viewer.watch()
            # the receiver exists now, and no RTP arrives before ICE and DTLS are done
            counter = RtpFrameCounter(video_receiver(viewer))
            await viewer.wait_connected(CONNECT_TIMEOUT_S)
            return viewer, counter
    except BaseException:
        await close_client("WHEP viewer", viewer)
        raise


async def grow(audience: Audience, target: int, node: NodeProcess, http: aiohttp.ClientSession) -> None:
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
            *(_connect_counting(node, http) for _ in range(batch)), return_exceptions=True
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
    while now_ms() < deadline and any(not c.arrivals for c in audience.counters):
        await asyncio.sleep(0.1)
    return 1 + sum(bool(c.arrivals) for c in audience.counters)
