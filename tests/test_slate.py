"""The holding slate: a publisher that drops leaves its stream up on a slate for the grace time;
coming back continues the same stream for the same viewers; not coming back ends it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from livegen.media.convert import frame_to_rgb
from livegen.media.slate import slate_picture
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, wait_until


@pytest.fixture
def settings():
    return node_settings(relay={"grace_s": 4}, engine={"default_preset": "passthrough"})


async def _frames(track, count: int, timeout: float = 10.0) -> list[np.ndarray]:
    async with asyncio.timeout(timeout):
        return [frame_to_rgb(await track.recv()) for _ in range(count)]


def test_slate_dims_the_last_frame_and_says_why():
    last = np.full((360, 640, 3), 200, np.uint8)
    picture = slate_picture(last, "Be right back")
    assert picture.shape == last.shape
    assert np.median(picture) < 100  # dimmed
    assert picture.max() == 255  # the message, in white
    assert slate_picture(None, "").shape == (720, 1280, 3)


async def test_a_dropped_publisher_holds_then_comes_back_to_the_same_viewer(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(640, 360, fps=30))
    viewer = WhepViewer(live_node.url, "cam", live_node.http)
    await viewer.watch()
    track = await viewer.video()
    live = await _frames(track, 5)
    assert np.mean(live[-1]) > 60  # colour bars

    await publisher.pc.close()  # a crash: no DELETE
    stream = live_node.hub.streams["cam"]
    await wait_until(lambda: stream.ingest is None and stream.slate is not None, timeout=10)
    assert live_node.hub.stream("cam").info()["state"] == "holding"
    await wait_until(lambda: stream.slate.frames > 10, timeout=5)
    held = await _frames(track, 10)
    assert np.mean(held[-1]) < np.mean(live[-1]) * 0.6  # the dimmed slate reaches the viewer

    again = WhipPublisher(live_node.url, "cam", live_node.http)  # back within the grace time
    await again.publish(SyntheticVideoTrack(640, 360, fps=30))
    await wait_until(lambda: stream.ingest is not None and stream.slate is None, timeout=10)
    assert live_node.hub.streams["cam"] is stream and "cam" in live_node.hub.streams
    back = await _frames(track, 20)  # the same viewer session, never ended
    assert np.mean(back[-1]) > np.mean(held[-1]) * 1.5
    assert len(stream.viewers) == 1 and stream.info()["state"] == "live"

    await again.pc.close()
    await wait_until(lambda: stream.ingest is None, timeout=10)
    await wait_until(lambda: "cam" not in live_node.hub.streams, timeout=15)  # grace ran out
    await viewer.close()


async def test_delete_ends_at_once_without_a_slate(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(320, 240, fps=15))
    await wait_until(lambda: "cam" in live_node.hub.streams)
    await publisher.close()
    await wait_until(lambda: "cam" not in live_node.hub.streams, timeout=5)


@pytest.mark.parametrize("settings", [node_settings(relay={"grace_s": 60}, engine={"default_preset": "passthrough"})])
async def test_closing_the_hub_does_not_wait_out_a_held_streams_grace_time(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(320, 240, fps=15))
    await wait_until(lambda: "cam" in live_node.hub.streams and live_node.hub.streams["cam"].output.last_frame is not None)
    stream = live_node.hub.streams["cam"]
    await publisher.pc.close()  # a crash: the stream holds on its slate for a minute
    await wait_until(lambda: stream.slate is not None, timeout=10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await live_node.hub.close()
    assert loop.time() - started < 3.0  # not the hub's 5 s wait for tasks, nor the grace time
    assert live_node.hub.tasks == 0 and not live_node.hub.streams
