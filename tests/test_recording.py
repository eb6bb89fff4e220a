"""Recordings: fragmented MP4 that plays (the frames sent, AAC, aligned), fragments no longer than
asked, files that survive SIGKILL and a full disk, rotation, retention, a folder it cannot use."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import av
import pytest

from livegen.config import RecordingSettings
from livegen.media.aac import AacEncoder
from livegen.media.packet import MediaPacket
from livegen.relay.base import OutputState
from livegen.relay.muxer import DRIFT_SLACK_S, VIDEO_CLOCK, Timeline
from livegen.relay.recording import RecordingOutput, list_recordings
from tests.nginx_rtmp import h264_gop, luma_level, recorded_feed, wait_for

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def template() -> av.audio.stream.AudioStream:
    return AacEncoder("recording-tests", lambda item: None).template


@pytest.fixture(scope="module")
def gop90() -> list[bytes]:
    return h264_gop(320, 180, frames=90)  # a keyframe every 3 s: longer than any fragment


def muxed_up_to(output: RecordingOutput, seconds: float) -> Callable[[], bool]:
    return lambda: output.duration_s() >= seconds - 0.05


def decoded(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, int]]]:
    """Video frames as (seconds, mean luma) and audio frames as (seconds, sample rate), decoded
    until the file ends or stops making sense (a crash's torn tail)."""
    video: list[tuple[float, float]] = []
    audio: list[tuple[float, int]] = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0, audio=0):
                if isinstance(frame, av.VideoFrame):
                    y = frame.to_ndarray(format="yuv420p")[: frame.height]
                    video.append((float(frame.pts * frame.time_base), float(y.mean())))
                else:
                    audio.append((float(frame.pts * frame.time_base), frame.sample_rate))
        except av.FFmpegError:
            pass
    return video, audio


def fragment_spans(path: Path) -> list[float]:
    """Each fragment's span on the video track, in seconds (from its tfdt to the next's)."""
    data = path.read_bytes()

    def boxes(start: int, end: int):
        while start + 8 <= end:
            size, kind = struct.unpack(">I4s", data[start : start + 8])
            if size < 8 or start + size > end:
                return
            yield kind.decode(), start + 8, start + size
            start += size

    timescale, times = 0, []
    for kind, body, end in boxes(0, len(data)):
        if kind == "moov":
            trak = next(b for k, b, e in boxes(body, end) if k == "trak")  # the video: added first
            mdia = next((b, e) for k, b, e in boxes(trak, end) if k == "mdia")
            mdhd = next(b for k, b, e in boxes(*mdia) if k == "mdhd")
            at = mdhd + (20 if data[mdhd] == 1 else 12)  # after version, flags and the two times
            timescale = struct.unpack(">I", data[at : at + 4])[0]
        if kind == "moof":
            for k, traf, traf_end in boxes(body, end):
                if k != "traf":
                    continue
                parts = {k2: b2 for k2, b2, _ in boxes(traf, traf_end)}
                if struct.unpack(">I", data[parts["tfhd"] + 4 : parts["tfhd"] + 8])[0] != 1:
                    continue
                tfdt = parts["tfdt"]
                wide = data[tfdt] == 1
                times.append(struct.unpack(">Q" if wide else ">I", data[tfdt + 4 : tfdt + (12 if wide else 8)])[0])
    return [(b - a) / timescale for a, b in pairwise(times)]


def test_recording_plays_back_what_was_sent_in_short_fragments_while_it_grows(tmp_path: Path, template, gop90) -> None:
    opened: list[Path] = []
    closed: list[Path] = []
    settings = RecordingSettings(dir=tmp_path / "rec", fragment_s=1.0)
    keyframes: list[int] = []
    output = RecordingOutput(
        "cam 1",
        settings,
        template,
        lambda: keyframes.append(1),
        on_file_opened=opened.append,
        on_file_closed=closed.append,
    )
    output.start()
    feed = recorded_feed(gop90, 6.0)
    half = len(feed) // 2
    for item in feed[:half]:
        output.offer(item)
    wait_for(muxed_up_to(output, 2.9), 5, "the first half muxed")
    [path] = opened
    assert path.name.startswith("cam-1_") and path.parent == settings.dir
    growing = path.read_bytes()
    assert [f.complete for f in list_recordings(settings.dir)] == [False]
    for item in feed[half:]:
        output.offer(item)
    wait_for(muxed_up_to(output, 6.0), 5, "everything muxed")
    assert output.stop()
    assert keyframes and closed == [path]
    final = path.read_bytes()
    assert len(growing) > 10_000 and final.startswith(growing), "a growing file is only ever appended to"

    video, audio = decoded(path)
    assert len(video) == 180
    assert all(abs(mean - luma_level(i)) < 2.5 for i, (_, mean) in enumerate(video))
    assert {rate for _, rate in audio} == {48_000}
    assert audio[-1][0] == pytest.approx(6.0, abs=0.1)
    assert abs(audio[0][0] - video[0][0]) < 0.1
    spans = fragment_spans(path)
    assert len(spans) >= 5 and max(spans) <= 1.0 + 1e-6, spans

    listed = output.as_json()
    assert listed["state"] == "stopped" and listed["files"] == [str(path)] and listed["bytes"] == len(final)
    assert listed["duration_s"] == pytest.approx(6.0, abs=0.1) and listed["stream"] == "cam 1"
    [found] = list_recordings(settings.dir)
    assert (found.path, found.stream, found.recording_id, found.part) == (path, "cam-1", output.id, 1)
    assert found.complete


CHILD = r"""
import resource, signal, sys, time
from pathlib import Path
from livegen.config import RecordingSettings
from livegen.media.aac import AacEncoder
from livegen.relay.recording import RecordingOutput
from tests.nginx_rtmp import h264_gop, recorded_feed

mode, folder = sys.argv[1], Path(sys.argv[2])
feed = recorded_feed(h264_gop(320, 180, 30), 4.0)
if mode == "small-disk":  # a disk that fills up at 40 kB: writes fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
template = AacEncoder("child", print).template
output = RecordingOutput("child", RecordingSettings(dir=folder, fragment_s=0.5), template, lambda: None)
output.start()
for item in feed:
    output.offer(item)
deadline = time.monotonic() + 10
while time.monotonic() < deadline and output.status.state.value != "failed":
    if output.timeline is not None and output.timeline.duration_s >= 3.95:
        break
    time.sleep(0.02)
print(output.status.state.value, output.status.last_error, flush=True)
if mode == "small-disk":
    output.stop()
else:
    time.sleep(60)
"""


def run_child(mode: str, folder: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-c", CHILD, mode, str(folder)]
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return child, child.stdout.readline()


def test_a_recorder_killed_with_sigkill_leaves_a_file_that_plays_to_its_last_fragment(tmp_path: Path) -> None:
    child, line = run_child("kill", tmp_path)
    try:
        assert line.startswith("live"), line
        time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    [found] = list_recordings(tmp_path)
    assert found.complete, "the dead writer's lock went with it"
    video, audio = decoded(found.path)
    # 4 s were sent; at most the fragment in memory (0.5 s) is lost
    assert 4 * 30 - 15 <= len(video) <= 4 * 30
    assert all(abs(mean - luma_level(i)) < 2.5 for i, (_, mean) in enumerate(video))
    assert audio and audio[-1][0] >= 3.0


def test_a_full_disk_fails_the_recording_and_keeps_what_was_written(tmp_path: Path) -> None:
    child, line = run_child("small-disk", tmp_path)
    assert child.wait(20) == 0
    assert line.startswith("failed") and "File too large" in line, line
    [found] = list_recordings(tmp_path)
    assert found.complete and found.bytes <= 40_000
    video, _ = decoded(found.path)
    assert video, "the fragments before the disk filled up still play"


def test_rotation_starts_a_file_per_segment_and_retention_deletes_the_oldest(tmp_path: Path, template) -> None:
    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"x" * 1_000_000)  # not a recording: never counted or deleted
    held = folder / "other_20200101T000000Z_0000beef_001.mp4"  # older, but another writer holds it
    held.write_bytes(b"\0" * 1000)
    held_fd = os.open(held, os.O_RDONLY)
    fcntl.flock(held_fd, fcntl.LOCK_EX)
    closed: list[Path] = []
    settings = RecordingSettings(dir=folder, fragment_s=1.0, segment_s=1.0, max_bytes=60_000)
    first_file = lambda path: bool(closed) and path == closed[0]  # noqa: E731 (say, not uploaded yet)
    output = RecordingOutput("rot", settings, template, lambda: None, on_file_closed=closed.append, keep=first_file)
    output.start()
    for item in recorded_feed(h264_gop(320, 180, frames=30), 5.0):
        output.offer(item)
    wait_for(muxed_up_to(output, 5.0), 10, "everything muxed")
    assert output.stop()
    os.close(held_fd)

    assert [p.name[-7:] for p in closed] == [f"{n:03d}.mp4" for n in range(1, 6)]
    remaining = [f for f in list_recordings(folder) if f.recording_id == output.id]
    assert remaining[0].path == closed[0], "kept"
    assert 2 <= len(remaining) < 5
    assert [f.path for f in remaining[1:]] == closed[-len(remaining) + 1 :], "the oldest went first"
    assert sum(f.bytes for f in remaining) + held.stat().st_size <= 60_000
    assert held.exists() and (folder / "notes.txt").exists()
    for file in remaining:
        video, audio = decoded(file.path)
        assert len(video) == 30 and audio
    assert [round(f.duration_s or 0, 1) for f in output.files] == [1.0] * 5


def test_a_folder_it_cannot_write_fails_the_recording_once(tmp_path: Path, template, gop90) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    output = RecordingOutput("blocked", RecordingSettings(dir=blocked), template, lambda: None)
    history = [output.status.state.value]
    original = output.status.set
    output.status.set = lambda state, error=None: (  # type: ignore[method-assign]
        history.append(state.value),
        original(state, error),
    )
    output.start()
    feed = recorded_feed(gop90, 0.5)
    for item in feed:
        output.offer(item)
    wait_for(lambda: output.status.state == OutputState.FAILED, 5, "failed")
    assert history == ["connecting", "failed"]
    assert "File exists" in (output.status.last_error or "")
    for item in feed:  # producers carry on unharmed
        output.offer(item)
    assert output.stop() and output.status.state == OutputState.FAILED and output.files == []


def test_clock_jumps_keep_the_timeline_and_a_new_picture_size_starts_a_new_file(tmp_path: Path, template) -> None:
    small, large = h264_gop(320, 180, frames=30), h264_gop(640, 360, frames=30)
    parts = [recorded_feed(gop, 1.0, origin=1000.0 + n) for n, gop in enumerate((small, small, small, large))]
    for n, part in enumerate(parts):
        video = [item for item in part if item.kind == "video"]
        for index, item in enumerate(video):
            if n == 1:  # a slate whose clock restarted behind: the encoder forces +1 tick a frame
                item.packet.pts = item.packet.dts = 29 * 3000 + 1 + index
            elif n == 2:  # a new publisher whose clock is an hour ahead
                item.packet.pts = item.packet.dts = item.packet.pts + 3600 * 90_000
        for item in part:
            if item.kind == "audio":  # the stream's AAC runs on, whoever publishes
                item.packet.pts = item.packet.dts = item.packet.pts + n * 48_000
    feed = sorted(parts[0] + [item for part in parts[1:] for item in part[1:]], key=lambda item: item.at)
    output = RecordingOutput("resize", RecordingSettings(dir=tmp_path), template, lambda: None)
    output.start()
    for item in feed:
        output.offer(item)
    wait_for(muxed_up_to(output, 3.95), 5, "everything muxed")
    assert output.stop()
    first, second = output.files
    video, audio = decoded(first.path)
    assert [round(t * 30) for t, _ in video] == list(range(90)), "frames a frame apart, no jump"
    assert audio[-1][0] == pytest.approx(3.0, abs=0.1)
    video, audio = decoded(second.path)
    with av.open(str(second.path)) as container:
        assert container.streams.video[0].width == 640
    assert len(video) == 30 and abs(audio[0][0] - video[0][0]) < 0.1


def test_a_publisher_clock_running_fast_is_pulled_back_to_the_node_clock() -> None:
    timeline = Timeline(origin_at=0.0)
    placed = []
    for index in range(30 * 120):  # two minutes of video whose clock runs 1 % fast
        packet = av.Packet(b"")
        packet.pts = round(index * 3000 * 1.01)
        placed.append(timeline.place(MediaPacket("video", packet, index / 30), VIDEO_CLOCK))
    drift = [p / 90_000 - i / 30 for i, p in enumerate(placed)]
    assert DRIFT_SLACK_S <= max(drift) <= DRIFT_SLACK_S + 0.01, "held within the slack"
    assert all(b > a for a, b in pairwise(placed))
    steps = [b - a for a, b in pairwise(placed)]
    assert min(steps) >= 0.9 * 3000 * 1.01 - 1, "pulled back gently, never a jump"


def test_a_late_first_keyframe_does_not_keep_the_video_late() -> None:
    """The keyframe a container starts with comes late (the encoder starting up), the frames
    after it a little late and now and then very late: video goes where most of them say."""
    latencies = [0.12] + [0.02 + (index % 7) / 1000 + (0.2 if index % 11 == 0 else 0.0) for index in range(1, 120)]
    origin = latencies[0]
    timeline = Timeline(origin_at=origin)
    placed = []
    for index, latency in enumerate(latencies):
        packet = av.Packet(b"")
        packet.pts = index * 3000
        placed.append(timeline.place(MediaPacket("video", packet, index / 30 + latency), VIDEO_CLOCK))
    typical = 0.023  # the median latency
    late = [p / 90_000 - (i / 30 + typical - origin) for i, p in enumerate(placed)]
    assert late[0] == pytest.approx(0.097, abs=0.001), "the keyframe goes where it came"
    assert all(abs(error) < 0.01 for error in late[60:]), "pulled back within two seconds"
    steps = [b - a for a, b in pairwise(placed)]
    assert min(steps) >= 0.9 * 3000 and max(steps) <= 3000, "gently, never a jump"


def test_stopping_writes_what_was_offered_before_the_stop(tmp_path: Path, template) -> None:
    ready = threading.Event()  # the muxer asks for a keyframe once it takes packets
    output = RecordingOutput("stop", RecordingSettings(dir=tmp_path, fragment_s=1.0), template, ready.set)
    output.start()
    assert ready.wait(10)
    for item in recorded_feed(h264_gop(320, 180, frames=30), 2.0):
        output.offer(item)
    assert output.stop()  # at once: the packets still queued are written before the file closes
    [found] = list_recordings(tmp_path)
    video, audio = decoded(found.path)
    assert len(video) == 60 and audio
