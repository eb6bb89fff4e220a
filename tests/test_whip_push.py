"""WHIP push: a stream's encoded H.264 and Opus reach another node over WHIP, unchanged, and the
output fails, retries and ends the way an operator expects."""

from __future__ import annotations

import asyncio
import fractions
import logging
import socket
import threading
import time

import av
import numpy as np
import pytest
from aiohttp import web

from livegen.config import OutputSettings, RelaySettings, Settings
from livegen.media.encoder import RTP_VIDEO_CLOCK, VideoEncoder
from livegen.media.packet import MediaPacket
from livegen.relay.base import OutputState
from livegen.relay.whip_push import WhipPushOutput
from livegen.rtc import aiortc_adapter
from livegen.testing.clients import WhepViewer
from tests.conftest import node_settings, wait_until

WIDTH, HEIGHT, FPS = 320, 240, 15
DARK, BRIGHT = 50, 200  # luma of the left and right halves of the pushed picture
TOKEN = "s3cret-push-token"
OPUS_CLOCK = fractions.Fraction(1, 48_000)
CONNECTING, LIVE, RETRYING, FAILED, STOPPED = (
    OutputState.CONNECTING, OutputState.LIVE, OutputState.RETRYING, OutputState.FAILED, OutputState.STOPPED,
)


@pytest.fixture
def settings() -> Settings:
    """The receiving node holds a stream whose publisher vanished (so only a DELETE ends it)."""
    return node_settings(relay={"grace_s": 30.0})


def relay_settings() -> RelaySettings:
    return RelaySettings(connect_timeout_s=5.0, backoff_base_s=0.05, backoff_cap_s=0.2)


def opus_packets(count: int) -> list[bytes]:
    """`count` 20 ms Opus packets of a tone that swells, so no two payloads are alike."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48_000, "stereo", "s16"
    encoder.bit_rate = 64_000
    encoder.time_base = OPUS_CLOCK
    payloads: list[bytes] = []
    t = np.arange(960) / 48_000
    for index in range(count + 10):
        level = 2000 + 200 * index
        tone = (np.sin(2 * np.pi * 440 * (t + index * 0.02)) * level).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48_000, index * 960, OPUS_CLOCK
        payloads += [bytes(p) for p in encoder.encode(frame)]
    return payloads[:count]


class StreamFeed:
    """Stands in for a stream: an encoder thread offering H.264 of a half-dark, half-bright
    picture (the node's own `VideoEncoder`: libx264, baseline, no B-frames, headers in-band),
    and a loop task offering Opus, both paced like live media."""

    def __init__(self, output: WhipPushOutput | None = None):
        self.output = output
        self.keyframe_requests = 0
        self._keyframe = threading.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._encode, name="test-whip-feed", daemon=True)
        self._audio: asyncio.Task[None] | None = None
        self.opus = opus_packets(100)
        self.video_offered = 0

    def request_keyframe(self) -> None:  # any thread, like the stream's encoder's
        self.keyframe_requests += 1
        self._keyframe.set()

    def start(self, output: WhipPushOutput) -> None:
        self.output = output
        self._thread.start()
        self._audio = asyncio.get_running_loop().create_task(self._pace_audio(), name="test-whip-audio")

    def _encode(self) -> None:
        encoder = VideoEncoder("H264", OutputSettings(h264_encoder="libx264", keyframe_interval_s=2.0), fps=FPS)
        luma = np.full((HEIGHT, WIDTH), DARK, np.uint8)
        luma[:, WIDTH // 2 :] = BRIGHT
        picture = np.concatenate([luma, np.full((HEIGHT // 2, WIDTH), 128, np.uint8)])
        index = 0
        started = time.monotonic()
        while not self._halt.wait(max(0.0, started + index / FPS - time.monotonic())):
            frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
            frame.pts, frame.time_base = int(index * 90_000 / FPS), RTP_VIDEO_CLOCK
            keyframe = self._keyframe.is_set()
            self._keyframe.clear()
            for packet in encoder.encode(frame, keyframe):
                self.output.offer(MediaPacket("video", packet, time.monotonic()))  # type: ignore[union-attr]
                self.video_offered += 1
            index += 1

    async def _pace_audio(self) -> None:
        index = 0
        while True:
            packet = av.Packet(self.opus[index % len(self.opus)])
            packet.pts, packet.time_base = index * 960, OPUS_CLOCK
            self.output.offer(MediaPacket("audio", packet, time.monotonic()))  # type: ignore[union-attr]
            index += 1
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._halt.set()
        if self._audio is not None:
            self._audio.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)


async def serve(handler, port: int = 0) -> tuple[web.AppRunner, str]:
    """A stand-in WHIP server on 127.0.0.1 answering every request with `handler`."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def luma_halves(frame: av.VideoFrame) -> tuple[float, float]:
    gray = frame.reformat(format="yuv420p").to_ndarray()[: frame.height].astype(np.float32)  # the Y plane
    middle = gray.shape[1] // 2
    return float(gray[:, : middle - 8].mean()), float(gray[:, middle + 8 :].mean())


async def test_pushed_stream_plays_on_another_node(live_node):
    loop = asyncio.get_running_loop()
    feed = StreamFeed()
    url = f"{live_node.url}/whip/relayed?preset=passthrough"
    output = WhipPushOutput("cam", url, None, relay_settings(), feed.request_keyframe, loop)
    assert output.status.url == f"{live_node.url}/whip/relayed?***"
    feed.start(output)
    output.start()
    try:
        await wait_until(lambda: output.status.state == LIVE, timeout=10)
        assert feed.keyframe_requests >= 1  # a fresh session starts at a keyframe
        await wait_until(lambda: "relayed" in live_node.hub.streams)

        viewer = WhepViewer(live_node.url, "relayed", live_node.http)
        await viewer.watch(audio=True)
        heard: list[bytes] = []
        audio_receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "audio")
        aiortc_adapter.tap_rtp(audio_receiver, lambda packet: heard.append(bytes(packet.payload)))
        video = await viewer.video()
        async with asyncio.timeout(10):
            frames = [await video.recv() for _ in range(5)]
        dark, bright = luma_halves(frames[-1])
        assert (frames[-1].width, frames[-1].height) == (WIDTH, HEIGHT)
        assert abs(dark - DARK) < 12 and abs(bright - BRIGHT) < 12, (dark, bright)

        await wait_until(lambda: len(heard) >= 20, timeout=10)
        assert set(heard) <= set(feed.opus)  # Opus went through both nodes byte for byte
        info = output.status.as_json()
        assert info["state"] == "live" and info["kind"] == "whip"
        assert info["bytes"] > sum(map(len, heard))  # the video, and at least the audio it heard
        await viewer.close()
    finally:
        closed = await output.close()
        await feed.stop()
    assert closed
    assert output.history == [CONNECTING, LIVE, STOPPED]
    # the DELETE ends the stream at once; a vanished peer would have held it on the slate
    await wait_until(lambda: "relayed" not in live_node.hub.streams, timeout=3)


async def test_rejected_token_fails_without_leaking_it(caplog):
    caplog.set_level(logging.DEBUG, logger="livegen")
    seen: list[tuple[str, str, str]] = []

    async def reject(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization", ""), request.content_type, await request.text()))
        return web.Response(status=401, text="unknown stream key")

    runner, base = await serve(reject)
    try:
        loop = asyncio.get_running_loop()
        output = WhipPushOutput("cam", f"{base}/whip/cam", TOKEN, relay_settings(), lambda: None, loop)
        output.start()
        await wait_until(lambda: output.status.state == FAILED, timeout=10)
        await output.close()
    finally:
        await runner.cleanup()
    assert output.history == [CONNECTING, FAILED, STOPPED]
    assert len(seen) == 1  # a rejected token is not retried
    authorization, content_type, offer = seen[0]
    assert authorization == f"Bearer {TOKEN}" and content_type == "application/sdp"
    sections = offer.split("m=")[1:]
    assert [s.split()[0] for s in sections] == ["video", "audio"]
    assert all("a=sendonly" in s for s in sections)
    codecs = [{line.split()[1].split("/")[0] for line in s.splitlines() if line.startswith("a=rtpmap:")} for s in sections]
    assert codecs == [{"H264", "rtx"}, {"opus"}]
    assert "401" in output.status.last_error and "unknown stream key" in output.status.last_error
    assert TOKEN not in str(output.status.as_json()) and TOKEN not in caplog.text


async def test_refused_then_redirected_then_dropped_reconnects(live_node):
    """Refused port → retrying; the server appears (and redirects to the real node) → live;
    the receiving node ends the stream → retrying → live again; close() DELETEs at the
    redirected location, so the stream ends at once."""
    loop = asyncio.get_running_loop()
    port = free_port()
    feed = StreamFeed()
    output = WhipPushOutput("cam", f"http://127.0.0.1:{port}/whip/cam", None, relay_settings(), feed.request_keyframe, loop)
    feed.start(output)
    output.start()
    front = None
    try:
        await wait_until(lambda: output.status.state == RETRYING, timeout=5)
        assert "cannot connect" in output.status.last_error
        offered = feed.video_offered
        await asyncio.sleep(0.3)  # still refused: more attempts, one reconnect counted
        assert output.status.reconnects == 1 and output.status.state == RETRYING
        assert feed.video_offered > offered  # producers never wait for a server

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(f"{live_node.url}/whip/relayed?preset=passthrough")

        front, _ = await serve(redirect, port)
        await wait_until(lambda: output.status.state == LIVE, timeout=10)
        sent = output.status.sent.total
        await wait_until(lambda: output.status.sent.total > sent)

        await live_node.hub.end_stream("relayed")  # the far end goes away
        await wait_until(lambda: output.history == [CONNECTING, RETRYING, LIVE, RETRYING, LIVE], timeout=15)
        assert output.status.reconnects == 2
        assert "relayed" in live_node.hub.streams
    finally:
        await output.close()
        await feed.stop()
        if front is not None:
            await front.cleanup()
    assert output.history == [CONNECTING, RETRYING, LIVE, RETRYING, LIVE, STOPPED]
    await wait_until(lambda: "relayed" not in live_node.hub.streams, timeout=3)


async def test_stuck_server_times_out_and_close_is_prompt():
    """A server that never answers: the attempt gives up after `connect_timeout_s` and retries;
    stop() (from another thread) does not wait for it."""
    hold = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await hold.wait()
        return web.Response(status=503)

    runner, base = await serve(never)
    try:
        loop = asyncio.get_running_loop()
        settings = RelaySettings(connect_timeout_s=0.3, backoff_base_s=0.05, backoff_cap_s=0.1)
        output = WhipPushOutput("cam", f"{base}/whip/cam", None, settings, lambda: None, loop)
        output.start()
        await wait_until(lambda: output.status.state == RETRYING, timeout=5)
        assert "did not answer within 0.3 s" in output.status.last_error
        started = time.monotonic()
        assert await loop.run_in_executor(None, output.stop, 2.0)  # how the hub stops it, off the loop
        assert time.monotonic() - started < 1.0
        assert output.history[-1] == STOPPED and output.history.count(RETRYING) == 1
    finally:
        hold.set()
        await runner.cleanup()
