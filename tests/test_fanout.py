"""Encode-once fan-out: one encoder per stream and codec, bounded viewer queues, keyframes."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from livegen.config import OutputSettings
from livegen.media.encoder import VideoEncoder, ViewerEncoder, target_bitrate
from livegen.media.output import PacketSubscription
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, wait_until


async def frames(viewer: WhepViewer, count: int):
    track = await viewer.video()
    async with asyncio.timeout(20):
        return [await track.recv() for _ in range(count)]


def restrict_codecs(viewer: WhepViewer, mime: str) -> None:
    from aiortc import RTCRtpSender

    viewer.pc.addTransceiver("video", direction="recvonly").setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == mime]
    )


async def test_viewers_share_one_encoder_per_codec(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset="grayscale")
    await publisher.publish(SyntheticVideoTrack(320, 240, fps=30))
    viewers = [WhepViewer(live_node.url, "cam", live_node.http) for _ in range(3)]
    for viewer in viewers:
        await viewer.watch()
    vp8 = WhepViewer(live_node.url, "cam", live_node.http)
    restrict_codecs(vp8, "video/VP8")
    await vp8._exchange()
    for viewer in [*viewers, vp8]:
        got = await frames(viewer, 10)
        assert got[-1].width == 320
    stream = live_node.hub.streams["cam"]
    assert sorted(v.codec for v in stream.viewers.values()) == ["H264", "H264", "H264", "VP8"]
    out = stream.info()["output"]
    assert out["mode"] == "encode_once"
    assert out["encoders"] == {"H264": "libx264", "VP8": "libvpx"}
    # every processed frame was encoded once for all four viewers, not once per viewer
    assert out["frames_encoded"] <= stream.pipeline.stats.frames_out
    for viewer in [*viewers, vp8]:
        await viewer.close()
    await wait_until(lambda: not live_node.hub.streams["cam"].viewers)
    assert stream.output.encoder.implementations() == {}  # no viewer, no encoding
    await publisher.close()


@pytest.mark.parametrize("settings", [node_settings(output={"mode": "per_viewer"})])
async def test_per_viewer_mode_still_serves_viewers(live_node, settings):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset="grayscale")
    await publisher.publish(SyntheticVideoTrack(320, 240))
    viewer = WhepViewer(live_node.url, "cam", live_node.http)
    await viewer.watch()
    got = await frames(viewer, 10)
    rgb = got[-1].to_ndarray(format="rgb24").astype(int)
    assert np.abs(rgb[60:200, :, 0] - rgb[60:200, :, 2]).mean() < 6
    out = live_node.hub.streams["cam"].info()["output"]
    assert out["frames_encoded"] == 0  # nothing went through the shared encoder
    # the viewer's own encoder runs encode_once's settings, not aiortc's libx264 defaults
    assert out["viewer_encoders"] == 1
    ran = out["encoder_settings"]["H264"]
    assert (ran["encoder"], ran["preset"], ran["tune"]) == ("libx264", "ultrafast", "zerolatency")
    assert ran["profile"] == "Baseline"
    assert ran["bitrate_bps"] == target_bitrate(OutputSettings(), 320, 240)
    await viewer.close()
    await publisher.close()


def test_a_viewer_encoder_leaves_the_shared_frame_alone():
    frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 90, np.uint8), format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 7, fractions.Fraction(1, 30)
    encoder = ViewerEncoder("H264", OutputSettings())
    packets = encoder.encode(frame, keyframe=True)
    assert packets and packets[0].is_keyframe
    # other viewers' encoders read the same frame at the same time
    assert (frame.pts, frame.time_base, frame.pict_type) == (7, fractions.Fraction(1, 30), PictureType.NONE)
    assert encoder.describe()["preset"] == "ultrafast"


async def test_late_viewer_and_pli_get_keyframes_rate_limited(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset="passthrough")
    await publisher.publish(SyntheticVideoTrack(320, 240))
    first = WhepViewer(live_node.url, "cam", live_node.http)
    await first.watch()
    await frames(first, 5)
    encoder = live_node.hub.streams["cam"].output.encoder
    forced = encoder.keyframes_forced
    late = WhepViewer(live_node.url, "cam", live_node.http)
    await late.watch()
    await frames(late, 3)  # decodable at once: it started on a keyframe
    assert encoder.keyframes_forced == forced + 1
    session = next(v for v in live_node.hub.streams["cam"].viewers.values() if v.track is not None)
    for _ in range(20):  # a burst of PLIs ...
        session._sender._send_keyframe()
    # ... is served by one keyframe, no sooner than min_keyframe_gap_s (0.5 s) after the last
    await wait_until(lambda: encoder.keyframes_forced == forced + 2, timeout=3)
    await asyncio.sleep(0.7)
    assert encoder.keyframes_forced == forced + 2
    await late.close()
    await first.close()
    await publisher.close()


def packet(keyframe: bool) -> av.Packet:
    p = av.Packet(b"\x00" * 10)
    p.is_keyframe = keyframe
    return p


async def test_slow_viewer_resyncs_at_a_keyframe():
    wanted = []
    sub = PacketSubscription("H264", capacity=4, want_keyframe=wanted.append)
    sub.offer([packet(False)])
    assert sub.dropped == 1 and len(sub) == 0  # waits for the first keyframe
    sub.offer([packet(True), packet(False), packet(False), packet(False)])
    assert len(sub) == 4
    sub.offer([packet(False)])  # over capacity: drop the backlog, ask for a keyframe
    assert wanted == ["H264"] and sub.resyncs == 1 and sub.waiting_for_keyframe
    sub.offer([packet(False), packet(True)])
    got = await sub.get()
    assert got.is_keyframe and sub.dropped == 1 + 4 + 2


def test_encoder_bitrates_and_keyframes():
    settings = OutputSettings()
    assert target_bitrate(settings, 1280, 720) == 2_500_000
    assert target_bitrate(settings, 1920, 1080) == 5_625_000
    assert target_bitrate(OutputSettings(bitrate_bps=20_000_000), 1920, 1080) == 8_000_000
    encoder = VideoEncoder("H264", settings)
    keyframes = []
    for i in range(6):
        frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 30, np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts = i * 3000
        frame.time_base = __import__("fractions").Fraction(1, 90000)
        for p in encoder.encode(frame, keyframe=(i == 4)):
            keyframes.append(p.is_keyframe)
            assert p.pts == i * 3000  # RTP clock kept for aiortc's packetizer
    assert keyframes == [True, False, False, False, True, False]
    assert encoder.context.bit_rate == target_bitrate(settings, 160, 120)


@pytest.mark.parametrize("preset", ["ultrafast", "veryfast"])
def test_h264_is_constrained_baseline_as_the_sdp_promises(preset):
    import fractions
    import re

    encoder = VideoEncoder("H264", OutputSettings(x264_preset=preset))
    frame = av.VideoFrame.from_ndarray(np.zeros((240, 320, 3), np.uint8), format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    data = b"".join(bytes(p) for p in encoder.encode(frame, keyframe=True))
    sps = re.search(b"\x00\x00\x01[\x27\x67](.)(.)", data, re.DOTALL)
    assert sps.group(1)[0] == 66 and sps.group(2)[0] & 0x40  # profile 42, constraint_set1: 42e0..
