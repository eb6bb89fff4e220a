"""Opus from the publisher reaches viewers unchanged and in sync with the processed video."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from livegen.effects.base import Effect, EffectParams, Frame
from livegen.effects.chain import EffectChain
from livegen.rtc import aiortc_adapter
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticAudioTrack, SyntheticVideoTrack
from tests.conftest import node_settings


class RtpLog:
    """What arrives on the `kind` receiver of a peer: payloads, and when each RTP timestamp
    was first seen (monotonic seconds)."""

    def __init__(self, pc, kind: str):
        self.arrivals: dict[int, float] = {}
        self.payloads: list[bytes] = []
        receiver = next(t.receiver for t in pc.getTransceivers() if t.kind == kind)

        def record(packet) -> None:
            self.arrivals.setdefault(packet.timestamp, time.monotonic())
            self.payloads.append(bytes(packet.payload))

        aiortc_adapter.tap_rtp(receiver, record)

    def arrival(self, pts: int, tolerance: int) -> float | None:
        """Arrival of the packet a decoded frame came from. aiortc rebases decoded pts to the
        first RTP timestamp; decoders may shift it a little more (Opus pre-skip)."""
        if not self.arrivals:
            return None
        target = (next(iter(self.arrivals)) + pts) % (1 << 32)
        nearest = min(self.arrivals, key=lambda ts: abs(ts - target))
        return self.arrivals[nearest] if abs(nearest - target) <= tolerance else None


async def publish_av(node, stream: str, fps: float = 10.0, every_s: float = 1.0):
    epoch = asyncio.get_running_loop().time() + 0.3
    publisher = WhipPublisher(node.url, stream, node.http, preset="passthrough")
    await publisher.publish(
        SyntheticVideoTrack(320, 240, fps=fps, flash_every_s=every_s, epoch=epoch),
        SyntheticAudioTrack(beep_every_s=every_s, epoch=epoch),
    )
    return publisher


async def test_opus_is_relayed_without_reencoding(live_node):
    publisher = await publish_av(live_node, "cam")
    stream = live_node.hub.streams["cam"]
    relayed: list[bytes] = []
    push = stream.audio.push
    stream.audio.push = lambda payload, ts: (relayed.append(payload), push(payload, ts))[1]

    viewer = WhepViewer(live_node.url, "cam", live_node.http)
    await viewer.watch(audio=True)
    received = RtpLog(viewer.pc, "audio").payloads
    audio = await viewer.audio()
    loud = 0
    async with asyncio.timeout(15):
        for _ in range(100):
            frame = await audio.recv()
            loud += np.abs(frame.to_ndarray()).mean() > 1000
    assert loud >= 3  # the beeps came through
    assert len(received) > 50
    assert set(received) <= set(relayed)  # byte-identical Opus payloads: nothing was re-encoded
    assert stream.info()["audio"]["packets_out"] > 50
    await viewer.close()
    await publisher.close()


class SlowEffect(Effect):
    """Passes frames through after 60 ms, like a heavy effect would take."""

    name = "slow"

    def apply(self, frame: Frame) -> None:
        time.sleep(0.06)


async def measure_av_skew_ms(node) -> list[float]:
    publisher = await publish_av(node, "sync")
    stream = node.hub.streams["sync"]
    stream.pipeline.set_chain(EffectChain("slow", (SlowEffect(EffectParams()),)))
    viewer = WhepViewer(node.url, "sync", node.http)
    await viewer.watch(audio=True)
    video_rtp = RtpLog(viewer.pc, "video")
    audio_rtp = RtpLog(viewer.pc, "audio")
    video, audio = await viewer.video(), await viewer.audio()
    flashes: list[float] = []
    beeps: list[float] = []

    async def watch_video():
        previous = False
        while True:
            frame = await video.recv()
            flash = frame.to_ndarray(format="gray").mean() > 200
            arrived = video_rtp.arrival(frame.pts, tolerance=0)
            if flash and not previous and arrived is not None:
                flashes.append(arrived)
            previous = flash

    async def listen():
        previous = False
        while True:
            frame = await audio.recv()
            beep = np.abs(frame.to_ndarray()).mean() > 1000
            arrived = audio_rtp.arrival(frame.pts, tolerance=960)
            if beep and not previous and arrived is not None:
                beeps.append(arrived)
            previous = beep

    tasks = [asyncio.create_task(watch_video()), asyncio.create_task(listen())]
    await asyncio.sleep(6.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await viewer.close()
    await publisher.close()
    # pair each flash with the nearest beep (events are 1 s apart), skipping the warm-up second
    skews = []
    for flash in flashes[1:]:
        nearest = min(beeps, key=lambda beep: abs(beep - flash), default=None)
        if nearest is not None and abs(nearest - flash) < 0.5:
            skews.append((flash - nearest) * 1000)
    assert len(skews) >= 3, (flashes, beeps, len(video_rtp.arrivals), len(audio_rtp.arrivals))
    return skews


async def test_lips_match_the_voice_within_45_ms(live_node):
    skews = await measure_av_skew_ms(live_node)
    print("A/V skew ms (video after audio):", [round(s, 1) for s in skews])
    assert abs(float(np.median(skews))) <= 45, skews


@pytest.mark.parametrize("settings", [node_settings(output={"audio_sync": False})])
async def test_without_compensation_audio_runs_ahead(live_node, settings):
    """The same measurement with compensation off: video trails audio by the effect's time."""
    skews = await measure_av_skew_ms(live_node)
    assert float(np.median(skews)) > 45, skews
