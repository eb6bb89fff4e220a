"""RTMP outputs against a real nginx-rtmp on 127.0.0.1: what is pushed plays back (H.264 + AAC,
the frames sent, audio aligned with video), a server that dies and comes back is reconnected
to, a wrong application fails for good, a server that says nothing cannot hang the output."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest

from livegen.config import RelaySettings
from livegen.media.aac import AacEncoder
from livegen.relay.base import OutputState, PermanentOutputError
from livegen.relay.rtmp import InvalidOutputUrl, RtmpOutput, check_url
from tests.nginx_rtmp import (
    LiveVideoFeed,
    NginxRtmp,
    TlsTerminator,
    h264_gop,
    luma_level,
    play,
    wait_for,
)
from tests.nginx_rtmp import (
    nginx_rtmp_fixture as nginx_rtmp_fixture,  # the `nginx_rtmp` fixture
)

FAST_RETRY = RelaySettings(connect_timeout_s=1.0, backoff_base_s=0.1, backoff_cap_s=0.3)


def state_history(output: RtmpOutput) -> list[str]:
    """Every state the output passes through, in order (consecutive repeats folded)."""
    history: list[str] = [output.status.state.value]
    original = output.status.set

    def recording(state: OutputState, error: str | None = None) -> None:
        if history[-1] != state.value:
            history.append(state.value)
        original(state, error)

    output.status.set = recording  # type: ignore[method-assign]
    return history


class Pipeline:
    """A stream's parts for one RTMP output: live video, AAC from the node's encoder."""

    def __init__(self, url: str, settings: RelaySettings = FAST_RETRY, size: tuple[int, int] = (640, 360)):
        self.output: RtmpOutput | None = None
        self.aac = AacEncoder("test", self._offer)
        self.feed = LiveVideoFeed(h264_gop(*size), self._offer)
        self.output = RtmpOutput("test", url, self.aac.template, self.feed.request_keyframe, settings)
        self.history = state_history(self.output)

    def _offer(self, item) -> None:
        if self.output is not None:
            self.output.offer(item)

    def start(self) -> None:
        self.aac.start()
        self.feed.start()
        assert self.output is not None
        self.output.start()

    def close(self) -> None:
        assert self.output is not None
        started = time.monotonic()
        assert self.output.stop(timeout=5)
        assert time.monotonic() - started < 3, "stopping an output must be quick"
        self.feed.stop()
        assert self.aac.stop()
        assert self.output.status.state in (OutputState.STOPPED, OutputState.FAILED)
        assert not self.output.running


@pytest.fixture
def pipelines() -> Iterator[list[Pipeline]]:
    made: list[Pipeline] = []
    yield made
    for pipeline in made:
        pipeline.close()


def test_check_url_accepts_rtmp_and_explains_what_it_refuses() -> None:
    assert check_url("rtmp://live.example.com/app/secret-key") == ("rtmp", "rtmp://live.example.com/app/***")
    assert check_url("rtmps://live.example.com:443/live2/k?x=1") == (
        "rtmp",
        "rtmps://live.example.com:443/live2/***?***",
    )
    with pytest.raises(InvalidOutputUrl, match="libsrt"):
        check_url("srt://example.com:9000?streamid=secret")
    bad_urls = ("http://example.com/a/b", "rtmp://example.com/app", "rtmp:///app/k3y", "rtmp://u:hunter2@example.com/a/k3y")
    for bad in bad_urls:
        with pytest.raises(InvalidOutputUrl) as caught:
            check_url(bad)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, PermanentOutputError)
        assert "hunter2" not in str(caught.value) and "k3y" not in str(caught.value)


def test_pushed_stream_plays_back_with_the_frames_sent_and_audio_aligned(nginx_rtmp: NginxRtmp, pipelines) -> None:
    played: dict = {}

    def player() -> None:
        played.update(play(nginx_rtmp.url("show"), seconds=2.0))

    watcher = threading.Thread(target=player, daemon=True)
    watcher.start()
    pipeline = Pipeline(nginx_rtmp.url("show"))
    pipelines.append(pipeline)
    pipeline.start()
    watcher.join(15)
    assert not watcher.is_alive(), "the player got no stream"
    assert played["codecs"] == ["aac", "h264"]
    assert played["audio_format"] == [(48_000, "stereo")], "the AAC sequence header reached the player"
    frames = played["video"]
    assert len(frames) >= 55
    # every picture is one that was sent, in the order sent (a GOP of levels 40, 45, …)
    levels = [round((mean - 40) / 5) for _, mean in frames]
    assert all(abs(mean - luma_level(level)) < 2.5 for (_, mean), level in zip(frames, levels, strict=True))
    assert levels[0] == 0, "playback starts at a keyframe"
    assert all((b - a) % 30 == 1 or b == 0 for a, b in pairwise(levels)), levels  # 0: an IDR asked for
    steps = [b - a for (a, _), (b, _) in pairwise(frames)]
    assert statistics.median(steps) == pytest.approx(1 / 30, abs=0.003)
    assert abs(played["audio"][0] - frames[0][0]) < 0.1
    assert pipeline.history == ["connecting", "live"]
    assert pipeline.output is not None and pipeline.output.status.sent.total > 50_000


def test_reconnects_when_the_server_dies_and_comes_back(nginx_rtmp: NginxRtmp, pipelines) -> None:
    pipeline = Pipeline(nginx_rtmp.url("again"), size=(320, 180))
    pipelines.append(pipeline)
    pipeline.start()
    output = pipeline.output
    assert output is not None
    wait_for(lambda: output.status.state == OutputState.LIVE, 5, "live")
    nginx_rtmp.kill()
    wait_for(lambda: output.status.state == OutputState.RETRYING, 5, "retrying")
    assert output.status.last_error
    time.sleep(0.5)  # a few refused attempts
    assert "refused" in (output.status.last_error or "")
    assert pipeline.feed.keyframe_requests == 1, "attempts that cannot connect ask for no keyframe"
    nginx_rtmp.start()
    wait_for(lambda: output.status.state == OutputState.LIVE, 5, "live again")
    assert pipeline.history == ["connecting", "live", "retrying", "live"]
    assert output.status.reconnects == 1
    assert pipeline.feed.keyframe_requests == 2, "a reconnect asks for a keyframe"
    played = play(nginx_rtmp.url("again"), seconds=0.5)
    assert played["codecs"] == ["aac", "h264"] and played["video"]


def test_a_wrong_application_fails_with_the_reason(nginx_rtmp: NginxRtmp, pipelines) -> None:
    pipeline = Pipeline(nginx_rtmp.url("key", app="nosuchapp"), size=(320, 180))
    pipelines.append(pipeline)
    pipeline.start()
    output = pipeline.output
    assert output is not None
    wait_for(lambda: output.status.state == OutputState.FAILED, 5, "failed")
    assert "rejected connect" in (output.status.last_error or "")
    assert pipeline.history == ["connecting", "failed"]
    wait_for(lambda: not output.running, 2, "the output's thread to end")


def test_a_server_that_says_nothing_times_out_and_stop_is_quick(pipelines) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    port = listener.getsockname()[1]
    settings = RelaySettings(connect_timeout_s=0.5, backoff_base_s=5.0, backoff_cap_s=5.0)
    pipeline = Pipeline(f"rtmp://127.0.0.1:{port}/live/key", settings, size=(320, 180))
    pipelines.append(pipeline)
    pipeline.start()
    output = pipeline.output
    assert output is not None
    wait_for(lambda: output.status.state == OutputState.RETRYING, 5, "retrying after the time-out")
    assert "timed out" in (output.status.last_error or "")
    listener.close()
    for conn in accepted:
        conn.close()


def test_rtmps_verifies_the_certificate_and_pushes_through_tls(
    nginx_rtmp: NginxRtmp, pipelines, tmp_path, monkeypatch
) -> None:
    tls = TlsTerminator(tmp_path, nginx_rtmp.port)
    try:
        url = f"rtmps://127.0.0.1:{tls.port}/live/secure"
        untrusted = Pipeline(url, size=(320, 180))
        pipelines.append(untrusted)
        untrusted.start()
        assert untrusted.output is not None
        wait_for(lambda: untrusted.output.status.state == OutputState.FAILED, 5, "failed")
        assert "certificate verify failed" in (untrusted.output.status.last_error or "")

        monkeypatch.setenv("SSL_CERT_FILE", str(tls.cert_file))  # what a trusted platform is
        trusted = Pipeline(url, size=(320, 180))
        pipelines.append(trusted)
        trusted.start()
        assert trusted.output is not None
        wait_for(lambda: trusted.output.status.state == OutputState.LIVE, 5, "live over TLS")
        played = play(nginx_rtmp.url("secure"), seconds=0.5)
        assert played["codecs"] == ["aac", "h264"] and len(played["video"]) >= 10
    finally:
        for pipeline in pipelines:
            pipeline.close()
        pipelines.clear()
        tls.close()


def test_a_stream_key_in_use_is_retried_until_it_is_free(nginx_rtmp: NginxRtmp, pipelines) -> None:
    first = Pipeline(nginx_rtmp.url("shared"), size=(320, 180))
    pipelines.append(first)
    first.start()
    assert first.output is not None
    wait_for(lambda: first.output.status.state == OutputState.LIVE, 5, "the first live")
    second = Pipeline(nginx_rtmp.url("shared"), size=(320, 180))
    pipelines.append(second)
    second.start()
    assert second.output is not None
    wait_for(lambda: second.output.status.state == OutputState.RETRYING, 5, "the second retrying")
    assert "BadName" in (second.output.status.last_error or "")
    pipelines.remove(first)
    first.close()
    wait_for(lambda: second.output.status.state == OutputState.LIVE, 5, "the second live once the key is free")
    assert second.history == ["connecting", "retrying", "live"]
