"""Live control: uploads of images/videos, and PATCHing a stream's chain while it plays."""

from __future__ import annotations

import asyncio
import io
import json
import time

import av
import numpy as np
import pytest
from PIL import Image

from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings
from tests.test_bad_input import request


def png(width: int = 64, height: int = 32, colour=(255, 0, 0, 128)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def mp4(frames: int = 5) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out.getvalue()


@pytest.mark.parametrize("settings", [node_settings(server={"max_upload_bytes": 100_000})])
async def test_uploads_are_checked_and_kept_by_content(live_node, settings):
    code, _, text = await request(live_node, "POST", "/api/assets", data=png(), headers={"Content-Type": "image/png"})
    assert code == 201, text

    first = json.loads(text)
    assert first["ref"].startswith("upload:") and (first["width"], first["height"]) == (64, 32)
    code, _, text = await request(live_node, "POST", "/api/assets", data=png(), headers={"Content-Type": "image/png"})
    assert json.loads(text)["ref"] == first["ref"]  # same bytes, same reference
    code, _, text = await request(live_node, "POST", "/api/assets", data=mp4(), headers={"Content-Type": "video/mp4"})
    assert code == 201 and json.loads(text)["kind"] == "video", text

    cases = [
        (b"not an image at all", "image/png", 422),
        (png()[:40], "image/png", 422),  # truncated
        (png(), "text/plain", 415),
        (b"\x00" * 200_000, "image/png", 413),
        (b"not a video", "video/mp4", 422),
    ]
    for body, content_type, status in cases:
        code, _, text = await request(live_node, "POST", "/api/assets", data=body, headers={"Content-Type": content_type})
        assert code == status, (content_type, status, text)
    # a decompression bomb: tiny file, enormous declared size
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")
    code, _, text = await request(live_node, "POST", "/api/assets", data=bomb.getvalue(), headers={"Content-Type": "image/png"})
    assert code == 422 and "pixels" in text


async def frames_flowing(viewer: WhepViewer, seconds: float) -> float:
    """The longest gap between received frames over `seconds`."""
    track = await viewer.video()
    longest, last, end = 0.0, time.monotonic(), time.monotonic() + seconds
    async with asyncio.timeout(seconds + 10):
        while time.monotonic() < end:
            await track.recv()
            now = time.monotonic()
            longest, last = max(longest, now - last), now
    return longest


async def test_patch_changes_the_chain_live_without_a_stall(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset="grayscale")
    await publisher.publish(SyntheticVideoTrack(320, 240))
    viewer = WhepViewer(live_node.url, "cam", live_node.http)
    await viewer.watch()
    await (await viewer.video()).recv()
    stream = live_node.hub.streams["cam"]

    async def patches():
        bodies = [
            {"params": {"grayscale": {"amount": 0.5}}},
            {"preset": "edges"},
            {"effects": [{"name": "grayscale", "params": {"amount": 1}}, {"name": "edges"}]},
            {"preset": "passthrough"},
            {"preset": "grayscale"},
        ]
        for body in bodies * 2:
            code, _, text = await request(live_node, "PATCH", "/api/streams/cam", json=body)
            assert code == 200, text
            await asyncio.sleep(0.1)

    # frames kept coming while the chain changed ten times: no gap much longer than the
    # machine's own (a busy CI machine alone can hold a frame for a few hundred ms)
    usual = await frames_flowing(viewer, 1.5)
    gap, _ = await asyncio.gather(frames_flowing(viewer, 2.0), patches())
    assert gap < max(0.5, 2.5 * usual), (gap, usual)

    code, _, text = await request(live_node, "PATCH", "/api/streams/cam", json={"params": {"grayscale": {"amount": 0.25}}})
    assert code == 200 and stream.spec.effects[0].params == {"amount": 0.25}
    before = stream.pipeline.chain
    # a parameter change is applied to the running effect in place, between two frames
    code, _, text = await request(live_node, "PATCH", "/api/streams/cam", json={"params": {"grayscale": {"amount": 0.75}}})
    assert code == 200 and json.loads(text)["effects"][0]["params"] == {"amount": 0.75}
    await (await viewer.video()).recv()
    await (await viewer.video()).recv()
    assert stream.pipeline.chain is before and before.effects[0].params.amount == 0.75
    for body, field in (
        ({"params": {"grayscale": {"amount": 7}}}, "amount"),
        ({"params": {"edges": {"strength": 1}}}, "params.edges"),
        ({"effects": [{"name": "sparkles"}]}, "sparkles"),
        ({"preset": "edges", "effects": []}, "either preset or effects"),
        # one stream's chain cannot take the worker from the others: engine.max_chain (8)
        ({"effects": [{"name": "edges"}] * 9}, "engine.max_chain"),
        ({"effects": [{"name": "edges"}] * 200}, "engine.max_chain"),
    ):
        code, _, text = await request(live_node, "PATCH", "/api/streams/cam", json=body)
        assert code == 422 and field in text, text
    assert stream.pipeline.chain is before  # refused changes leave the running chain alone
    await viewer.close()
    await publisher.close()
