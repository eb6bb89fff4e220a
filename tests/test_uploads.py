"""Uploads are what they claim: the bytes' real format must match the declared type (415 when
not), and a video is probed whole — its container, its size, every frame — before it is kept."""

from __future__ import annotations

import io

import av
import numpy as np
from PIL import Image

from tests.test_bad_input import request
from tests.test_control import mp4, png


def image(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 16), (10, 200, 30)).save(out, format=fmt)
    return out.getvalue()


def video(fmt: str, codec: str, width: int = 64, height: int = 48, frames: int = 5) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), i * 40, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out.getvalue()


async def test_bytes_must_be_what_the_content_type_says(live_node):
    cases = [
        (image("GIF"), "image/png", 415, "GIF"),
        (image("TIFF"), "image/jpeg", 415, "TIFF"),
        (png(), "image/webp", 415, "PNG"),
        (image("WEBP"), "image/png", 415, "WEBP"),
        (video("webm", "libvpx"), "video/mp4", 415, "webm"),
        (mp4(), "video/webm", 415, "mov"),
        (video("mp4", "libx264", width=4000, height=16), "video/mp4", 422, "a side"),
    ]
    for body, content_type, status, words in cases:
        code, _, text = await request(live_node, "POST", "/api/assets", data=body, headers={"Content-Type": content_type})
        assert code == status and words in text, (content_type, words, code, text)
    for body, content_type in ((image("JPEG"), "image/jpeg"), (image("WEBP"), "image/webp"),
                               (video("webm", "libvpx"), "video/webm"), (mp4(), "video/quicktime")):
        code, _, text = await request(live_node, "POST", "/api/assets", data=body, headers={"Content-Type": content_type})
        assert code == 201, (content_type, text)


async def test_a_video_that_does_not_decode_to_its_end_is_refused(live_node):
    good = video("webm", "libvpx", frames=20)
    damaged = bytearray(good)
    at = len(damaged) * 3 // 10
    damaged[at:at + 400] = bytes(400)  # a cluster of the container overwritten
    for body in (bytes(damaged), good[: len(good) // 3]):
        code, _, text = await request(live_node, "POST", "/api/assets", data=body, headers={"Content-Type": "video/webm"})
        assert code == 422 and "cannot be decoded" in text, text
