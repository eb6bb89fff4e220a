"""The relay end to end, through the real node: a published stream pushed over RTMP to nginx
and played back from nginx (H.264 + AAC, the processed pictures, frame rate, A/V offset); nginx
killed and restarted; a wrong application; the slate carrying the nginx-side stream across a
publisher drop. Real servers on 127.0.0.1 only, bounded in time."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import av
import numpy as np
import pytest

from livegen.testing.clients import WhipPublisher
from livegen.testing.tracks import SyntheticAudioTrack, SyntheticVideoTrack
from tests.conftest import node_settings, wait_until
from tests.nginx_rtmp import nginx_rtmp_fixture  # noqa: F401 (the fixture)
from tests.test_bad_input import request

FPS = 30


@pytest.fixture
def settings():
    return node_settings(
        engine={"default_preset": "grayscale"},
        relay={"grace_s": 8, "backoff_base_s": 0.2, "backoff_cap_s": 0.5, "connect_timeout_s": 3},
    )


class Player:
    """Reads an RTMP stream from nginx on a thread: per video frame (time, luma mean, chroma
    spread), per millisecond of decoded audio (time, RMS); the wall-clock time each frame arrived."""

    def __init__(self, url: str, seconds: float):
        self.url, self.seconds = url, seconds
        self.codecs: list[str] = []
        self.audio_format: set[tuple[int, str]] = set()
        self.video: list[tuple[float, float, float]] = []
        self.audio: list[tuple[float, float]] = []
        self.arrivals: list[float] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Player:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the player did not finish"

    def _run(self) -> None:
        try:
            with av.open(self.url, timeout=(10, 10), options={"analyzeduration": "500000"}) as container:
                self.codecs = sorted(s.codec_context.name for s in container.streams if s.type in ("audio", "video"))
                started = time.monotonic()
                for packet in container.demux():
                    for frame in packet.decode():
                        at = float(frame.pts * frame.time_base)
                        if isinstance(frame, av.VideoFrame):
                            planes = frame.to_ndarray(format="yuv420p")
                            luma, chroma = planes[: frame.height], planes[frame.height:]
                            self.video.append((at, float(luma.mean()), float(np.abs(chroma.astype(int) - 128).mean())))
                            self.arrivals.append(time.monotonic())
                        else:
                            self.audio_format.add((frame.sample_rate, frame.layout.name))
                            # per millisecond, not per frame: an AAC frame is 21 ms and a beep
                            # starts anywhere in one, so the frame's start would put it early
                            samples = frame.to_ndarray().astype(np.float32)
                            step = frame.sample_rate // 1000
                            for start in range(0, frame.samples, step):
                                block = samples[:, start : start + step]
                                self.audio.append((at + start / frame.sample_rate, float(np.sqrt((block**2).mean()))))
                    if time.monotonic() - started > self.seconds:
                        return
        except BaseException as exc:  # reported by the test
            self.error = exc


def onsets(series: list[tuple[float, float]], threshold: float) -> list[float]:
    """Times at which a value first rises over `threshold` after being under it."""
    found, above = [], True
    for at, value in series:
        if value > threshold and not above:
            found.append(at)
        above = value > threshold
    return found


async def add_output(node, url: str) -> dict:
    code, _, text = await request(node, "POST", "/api/streams/show/outputs", json={"url": url, "name": "nginx"})
    assert code == 201, text
    return json.loads(text)


def output_state(node, output_id: str) -> str:
    return node.hub.streams["show"].outputs.get(output_id).status.state.value


async def publish(node) -> WhipPublisher:
    publisher = WhipPublisher(node.url, "show", node.http)
    epoch = asyncio.get_running_loop().time() + 0.5
    await publisher.publish(
        SyntheticVideoTrack(640, 360, fps=FPS, flash_every_s=1.0, epoch=epoch),
        SyntheticAudioTrack(beep_every_s=1.0, epoch=epoch),
    )
    await wait_until(lambda: "show" in node.hub.streams and node.hub.streams["show"].ingest is not None)
    return publisher


async def test_rtmp_push_plays_back_from_nginx_and_survives_a_restart(live_node, nginx_rtmp):
    publisher = await publish(live_node)
    try:
        created = await add_output(live_node, nginx_rtmp.url("show"))
        await wait_until(lambda: output_state(live_node, created["id"]) == "live", timeout=15)

        player = Player(nginx_rtmp.url("show"), seconds=5).start()
        await asyncio.get_running_loop().run_in_executor(None, player.join, 20)
        assert player.error is None, player.error
        assert player.codecs == ["aac", "h264"]
        assert player.audio_format == {(48_000, "stereo")}
        steps = np.diff([at for at, _, _ in player.video])
        assert len(player.video) > 3 * FPS and abs(np.median(steps) - 1 / FPS) < 0.005
        assert max(spread for _, _, spread in player.video) < 2.0, "the grayscale preset's pictures, not colour bars"
        flashes = onsets([(at, luma) for at, luma, _ in player.video], 180)
        beeps = onsets(player.audio, 0.05)
        assert flashes and beeps
        offsets = [min((b - f for b in beeps), key=abs) for f in flashes]
        assert abs(np.median(offsets)) < 0.04, f"A/V offset {offsets}"

        nginx_rtmp.kill()
        await wait_until(lambda: output_state(live_node, created["id"]) == "retrying", timeout=10)
        nginx_rtmp.start()
        await wait_until(lambda: output_state(live_node, created["id"]) == "live", timeout=15)
        status = live_node.hub.streams["show"].outputs.get(created["id"]).status
        assert status.reconnects >= 1
        again = Player(nginx_rtmp.url("show"), seconds=1).start()
        await asyncio.get_running_loop().run_in_executor(None, again.join, 20)
        assert again.error is None and len(again.video) >= 5  # frames flow again after the restart

        wrong = await add_output(live_node, nginx_rtmp.url("show", app="nosuchapp"))
        await wait_until(lambda: output_state(live_node, wrong["id"]) == "failed", timeout=10)
        code, _, text = await request(live_node, "GET", "/api/streams/show/outputs")
        failed = next(o for o in json.loads(text)["outputs"] if o["id"] == wrong["id"])
        assert failed["last_error"] and "show" not in failed["url"]  # the key stays hidden
    finally:
        await publisher.close()


async def test_the_slate_keeps_the_platform_stream_unbroken_across_a_publisher_drop(live_node, nginx_rtmp):
    publisher = await publish(live_node)
    created = await add_output(live_node, nginx_rtmp.url("show"))
    await wait_until(lambda: output_state(live_node, created["id"]) == "live", timeout=15)
    player = Player(nginx_rtmp.url("show"), seconds=9).start()
    await asyncio.sleep(2.5)

    await publisher.pc.close()  # the publisher's network drops: no DELETE
    stream = live_node.hub.streams["show"]
    await wait_until(lambda: stream.slate is not None, timeout=10)
    await asyncio.sleep(2)
    back = await publish(live_node)  # within relay.grace_s
    assert live_node.hub.streams["show"] is stream
    await asyncio.get_running_loop().run_in_executor(None, player.join, 30)
    try:
        assert player.error is None, player.error
        gaps = np.diff(player.arrivals)
        assert len(player.video) > 6 * FPS and gaps.max() < 1.0, f"longest gap {gaps.max():.2f} s"
        lumas = [luma for _, luma, _ in player.video]
        assert min(lumas) < 0.6 * np.median(lumas)  # the dimmed slate was on the platform side
        status = stream.outputs.get(created["id"]).status
        assert status.state.value == "live" and status.reconnects == 0  # the platform saw no disconnect
    finally:
        await back.close()
