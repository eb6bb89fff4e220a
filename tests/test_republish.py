"""A publisher that crashed keeps its peer "connected" for a while (ICE consent) though it sends
nothing: a new publish of the same stream replaces it after 2 s of silence instead of a 409,
and the stream's viewers carry on. A publisher that is still sending is not replaced."""

from __future__ import annotations

import asyncio

from livegen.hub.registry import STALE_PUBLISHER_S
from livegen.testing.clients import SignallingError, WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import wait_until


async def test_a_silent_publisher_is_replaced_and_a_live_one_is_not(live_node):
    first = WhipPublisher(live_node.url, "cam", live_node.http, preset="passthrough")
    await first.publish(SyntheticVideoTrack(320, 240, fps=15))
    stream = live_node.hub.streams["cam"]
    viewer = WhepViewer(live_node.url, "cam", live_node.http)
    await viewer.watch()
    track = await viewer.video()
    await track.recv()

    rival = WhipPublisher(live_node.url, "cam", live_node.http)
    try:
        await rival.publish(SyntheticVideoTrack(320, 240, fps=15))
        raise AssertionError("a publisher that is sending was replaced")
    except SignallingError as exc:
        assert exc.status == 409
    await rival.pc.close()

    for transceiver in first.pc.getTransceivers():  # the publisher hangs: its peer stays up, no media
        transceiver.sender.replaceTrack(None)
    old = stream.ingest
    await wait_until(lambda: old.silent_s() > STALE_PUBLISHER_S, timeout=10)

    second = WhipPublisher(live_node.url, "cam", live_node.http)
    await second.publish(SyntheticVideoTrack(320, 240, fps=15))
    assert live_node.hub.streams["cam"] is stream and stream.ingest is not old and old.closed
    frames_before = stream.pipeline.stats.frames_in
    async with asyncio.timeout(10):
        for _ in range(15):
            await track.recv()  # the same viewer session, fed by the new publisher
    assert stream.pipeline.stats.frames_in > frames_before
    await viewer.close()
    await second.close()
    await first.pc.close()
    await wait_until(lambda: not live_node.hub.streams)
