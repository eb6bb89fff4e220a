"""The data path end to end: a real aiortc publisher (WHIP) and viewer (WHEP) on loopback."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from livegen.media.convert import frame_to_rgb, frame_to_tensor, tensor_to_rgb
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.effects import run_on_image
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import media_threads, open_sessions, wait_until


async def receive_frames(track, count: int, timeout: float = 20.0) -> list:
    frames = []
    async with asyncio.timeout(timeout):
        while len(frames) < count:
            frames.append(await track.recv())
    return frames


def media_tasks(before: set) -> list[str]:
    """Unfinished tasks started by livegen, aiortc or aioice since `before`."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        origin = code.co_filename if code else ""
        if task not in before and not task.done() and any(m in origin for m in ("livegen", "aiortc", "aioice")):
            found.append(f"{task.get_name()} {code.co_qualname}")
    return found


@pytest.mark.parametrize("preset", ["grayscale", "edges"])
async def test_frames_come_back_processed_and_delete_frees_everything(live_node, preset):
    tasks_before = set(asyncio.all_tasks())
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset=preset)
    camera = SyntheticVideoTrack(640, 480, fps=30)
    await publisher.publish(camera)
    await publisher.wait_connected()

    viewer = WhepViewer(live_node.url, "cam", live_node.http)
    await viewer.watch()
    await viewer.wait_connected()
    frames = await receive_frames(await viewer.video(), 20)

    last = frame_to_rgb(frames[-1]).astype(np.int16)
    assert last.shape == (480, 640, 3)
    source = camera.draw(0)
    chain = live_node.hub.presets.chain(preset)
    expected = tensor_to_rgb(run_on_image(chain, frame_to_tensor(source, torch.device("cpu")))).astype(np.int16)
    original = frame_to_rgb(source).astype(np.int16)
    top = slice(48, 320)  # colour bars only: below the stamp row, above the moving square
    error = np.abs(last[top] - expected[top]).mean()
    assert error < 10, f"output differs from {preset} of the input by {error:.1f}"
    assert np.abs(last[top] - original[top]).mean() > 3 * error, "the effect was not applied"
    if preset == "grayscale":
        assert np.abs(last[top, :, 0] - last[top, :, 2]).mean() < 6  # no colour left

    info = await (await live_node.http.get(f"{live_node.url}/api/streams/cam")).json()
    assert info["preset"] == preset and info["viewers"] == 1
    assert info["frames_out"] >= 20 and info["latency_ms"]["p50"] is not None

    assert await viewer.close() == 200
    assert await publisher.close() == 200
    await wait_until(lambda: not live_node.hub.streams and live_node.hub.tasks == 0)
    assert live_node.hub.worker.pipelines == ()
    assert "closed" in publisher.states and publisher.states[:3] == ["new", "connecting", "connected"]
    assert not open_sessions()
    # decoders of the node's ingest and of the closed test viewer have stopped; the worker stays
    await wait_until(lambda: media_threads() == ["livegen-worker-cpu"], timeout=5)
    try:
        await wait_until(lambda: not media_tasks(tasks_before), timeout=5)
    except TimeoutError:
        pytest.fail(f"tasks leaked: {media_tasks(tasks_before)}")


async def test_passthrough_keeps_pixels_and_pts_order(live_node):
    publisher = WhipPublisher(live_node.url, "pt", live_node.http, preset="passthrough")
    camera = SyntheticVideoTrack(640, 480, fps=30)
    await publisher.publish(camera)
    viewer = WhepViewer(live_node.url, "pt", live_node.http)
    await viewer.watch()
    frames = await receive_frames(await viewer.video(), 15)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    last = frame_to_rgb(frames[-1]).astype(np.int16)
    bars = camera.draw(0).to_ndarray(format="rgb24").astype(np.int16)
    assert np.abs(last[:200] - bars[:200]).mean() < 12  # top rows: bars only, codec loss only
    await viewer.close()
    await publisher.close()


async def test_publisher_leaving_ends_its_viewers(live_node):
    publisher = WhipPublisher(live_node.url, "gone", live_node.http)
    await publisher.publish(SyntheticVideoTrack(320, 240))
    viewer = WhepViewer(live_node.url, "gone", live_node.http)
    await viewer.watch()
    await receive_frames(await viewer.video(), 3)
    assert await publisher.close() == 200
    await wait_until(lambda: "gone" not in live_node.hub.streams)
    # the viewer's session is gone too: DELETE on it is a 404
    async with live_node.http.delete(viewer.location) as response:
        assert response.status == 404
    viewer.location = None
    await viewer.close()
