"""Outputs configured ahead start when the stream is published, with keyframes at most every
`relay.max_keyframe_interval_s` while they run; a stream without audio still sends AAC (silent)."""

from __future__ import annotations

import asyncio
import threading

import av
import pytest

from livegen.testing.clients import WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, wait_until
from tests.nginx_rtmp import nginx_rtmp_fixture  # noqa: F401 (the fixture)


def keyframes_and_audio(url: str, seconds: float) -> tuple[list[float], int]:
    """Times of the video keyframes and the number of decoded audio samples in `seconds`."""
    keyframes, samples = [], 0
    with av.open(url, timeout=(10, 10), options={"analyzeduration": "500000"}) as container:
        first = None
        for packet in container.demux():
            if packet.pts is None:
                continue
            at = float(packet.pts * packet.time_base)
            first = at if first is None else first
            if packet.stream.type == "video" and packet.is_keyframe:
                keyframes.append(at)
            elif packet.stream.type == "audio":
                samples += sum(frame.samples for frame in packet.decode())
            if at - first > seconds:
                break
    return keyframes, samples


@pytest.fixture
def settings(nginx_rtmp):
    return node_settings(
        outputs={"cam": [nginx_rtmp.url("configured")]},
        output={"keyframe_interval_s": 10},  # what viewers alone would get
        relay={"max_keyframe_interval_s": 1.0, "backoff_base_s": 0.2, "backoff_cap_s": 0.5},
    )


async def test_configured_outputs_start_on_publish_with_short_keyframe_intervals(live_node, nginx_rtmp):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset="passthrough")
    await publisher.publish(SyntheticVideoTrack(320, 240, fps=15))  # no audio track at all
    try:
        await wait_until(lambda: "cam" in live_node.hub.streams, timeout=10)
        outputs = live_node.hub.streams["cam"].outputs
        await wait_until(lambda: [o["state"] for o in outputs.statuses()] == ["live"], timeout=15)
        result: list = []
        reader = threading.Thread(target=lambda: result.append(keyframes_and_audio(nginx_rtmp.url("configured"), 4.5)))
        reader.start()
        await asyncio.get_running_loop().run_in_executor(None, reader.join, 30)
        keyframes, samples = result[0]
        gaps = [b - a for a, b in zip(keyframes, keyframes[1:])]
        assert len(keyframes) >= 4 and max(gaps) <= 1.1, keyframes
        assert samples > 48_000 * 3, "a stream without audio still carries (silent) AAC"
    finally:
        await publisher.close()
