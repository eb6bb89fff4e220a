"""Video files through the engine: `files.process.process_file` and `livegen process`.

Real files, encoded in the test with PyAV (H.264/VP8 video, AAC/Opus audio), go through real
chains on a real device worker; what comes out is decoded and compared with what went in.
"""

from __future__ import annotations

import io
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from livegen.cli import main
from livegen.config import EffectSpec, PresetSpec, load_settings
from livegen.effects import build_chain
from livegen.effects.base import Effect, EffectContext, Frame
from livegen.effects.chain import EffectChain
from livegen.engine.presets import PresetLibrary
from livegen.engine.worker import DeviceWorker
from livegen.files.command import ProgressReport
from livegen.files.process import FileError, ProcessCanceled, Progress, process_file
from livegen.media.assets import AssetStore

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 320, 240, 15
CODES = {"mp4": ("libx264", "aac"), "webm": ("libvpx", "libopus"), "mkv": ("libx264", "libopus")}


def code_value(index: int) -> int:
    """The brightness that marks frame `index` (survives lossy coding: steps of 8)."""
    return 16 + 8 * (index % 28)


def make_clip(path: Path, frames: int = 30, fps: int = FPS, pts: list[int] | None = None, audio: bool = True,
              size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """A clip with coloured frames, each marked by the brightness of its top-left block, and a
    stereo 440 Hz tone as long as the video; `pts` (in 1/fps) for a variable frame rate."""
    width, height = size
    vcodec, acodec = CODES[path.suffix[1:]]
    pts = pts or list(range(frames))
    with av.open(str(path), "w") as out:
        video = out.add_stream(vcodec, rate=fps, options={"preset": "ultrafast"} if vcodec == "libx264" else {})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if vcodec == "libvpx":
            video.bit_rate = 2_000_000
        sound = out.add_stream(acodec, rate=48000) if audio else None
        if sound is not None:
            sound.layout = "stereo"
        for index, stamp in enumerate(pts):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 60 + (index * 5) % 100, 40
            rgb[:64, :64] = code_value(index)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            total = round((pts[-1] + 1) / fps * 48000)
            for start in range(0, total, 960):
                t = np.arange(start, min(start + 960, total)) / 48000
                tone = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
                samples = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                samples.sample_rate, samples.pts, samples.time_base = 48000, start, Fraction(1, 48000)
                out.mux(sound.encode(samples))
            out.mux(sound.encode(None))
    return path


def decoded(path: Path) -> dict:
    """Everything a check needs about a file: its video frames (RGB, pts), time base, audio."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(video)]
        result = {"time_base": video.time_base, "pts": [p for p, _ in frames], "rgb": [r for _, r in frames],
                  "seconds": [float(p * video.time_base) for p, _ in frames], "audio": None}
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
            result["audio"] = (stream.codec_context.name, samples / stream.codec_context.sample_rate)
    return result


def gray(rgb: np.ndarray) -> bool:
    body = rgb[80:, 80:].astype(int)
    return int(np.abs(body[..., 0] - body[..., 1]).max()) <= 6 and int(np.abs(body[..., 1] - body[..., 2]).max()) <= 6


def codes(result: dict) -> list[int]:
    return [round((float(rgb[8:56, 8:56].mean()) - 16) / 8) for rgb in result["rgb"]]


def leftovers(folder: Path, *keep: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p not in keep)


class Slow(Effect):
    """Holds the worker for a while on every frame; leaves the picture as it is."""

    name = "slow"
    delay_s = 0.05

    def apply(self, frame: Frame) -> None:
        time.sleep(self.delay_s)
        frame.rgb = frame.rgb.copy()


@pytest.fixture(scope="module")
def worker():
    worker = DeviceWorker(torch.device("cpu"), shed=False)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def library() -> PresetLibrary:
    settings = load_settings(env={})
    assets = AssetStore(settings.server.uploads_dir, settings.assets_dir(), settings.server.max_upload_bytes)
    return PresetLibrary.from_folder(settings.presets_dir(), settings.engine.default_preset, EffectContext(assets=assets))


def test_mp4_to_mp4_keeps_every_frame_its_timestamps_and_the_audio(tmp_path, worker, library):
    # a variable frame rate: two frames missing every five
    stamps = [i + 2 * (i // 5) for i in range(24)]
    src = make_clip(tmp_path / "in.mp4", pts=stamps)
    seen: list[Progress] = []
    final = process_file(src, tmp_path / "out.mp4", library.chain("grayscale"), worker, on_progress=seen.append,
                         progress_interval_s=0.01)
    before, after = decoded(src), decoded(tmp_path / "out.mp4")
    assert len(after["pts"]) == len(before["pts"]) == 24
    assert after["time_base"] == before["time_base"] and after["pts"] == before["pts"]
    assert not gray(before["rgb"][3]) and all(gray(rgb) for rgb in after["rgb"])
    assert codes(after) == codes(before) == list(range(24))
    assert after["audio"][0] == "aac" and abs(after["audio"][1] - before["audio"][1]) < 1 / FPS
    assert (final.frames_done, final.frames_total) == (24, 24) and seen[-1] == final
    assert before["seconds"][-1] < final.media_s < before["seconds"][-1] + 2 / FPS
    assert {"decode", "encode", "grayscale"} <= set(final.stages_ms)
    assert leftovers(tmp_path, src) == ["out.mp4"] and worker.lanes == ()


@pytest.mark.parametrize(("source", "target", "audio"), [("webm", "mp4", "aac"), ("mp4", "webm", "opus"),
                                                         ("webm", "mkv", "opus")])
def test_other_containers_in_and_out(tmp_path, worker, library, source, target, audio):
    src = make_clip(tmp_path / f"in.{source}", frames=20)
    process_file(src, tmp_path / f"out.{target}", library.chain("grayscale"), worker)
    before, after = decoded(src), decoded(tmp_path / f"out.{target}")
    assert after["seconds"] == pytest.approx(before["seconds"], abs=0.002)  # every frame, at its time
    assert all(gray(rgb) for rgb in after["rgb"]) and codes(after) == list(range(20))
    assert after["audio"][0] == audio and abs(after["audio"][1] - before["audio"][1]) < 1 / FPS


def test_no_frame_is_dropped_when_the_chain_is_slower_than_the_frame_rate(tmp_path, worker):
    src = make_clip(tmp_path / "in.mp4", frames=24, fps=30, audio=False)  # 33 ms a frame, the chain takes 50
    chain = EffectChain("slow", (Slow(Slow.Params()),))
    final = process_file(src, tmp_path / "out.mp4", chain, worker)
    after = decoded(tmp_path / "out.mp4")
    assert codes(after) == list(range(24)) and after["pts"] == decoded(src)["pts"]
    assert final.frames_done == 24 and final.media_s / final.elapsed_s < 0.8  # slower than real time


def test_cancel_stops_the_job_and_leaves_no_file(tmp_path, worker):
    src = make_clip(tmp_path / "in.mp4", frames=60, audio=False)
    cancel = threading.Event()

    def on_progress(progress: Progress) -> None:
        if progress.frames_done >= 5:
            cancel.set()

    with pytest.raises(ProcessCanceled):
        process_file(src, tmp_path / "out.mp4", EffectChain("slow", (Slow(Slow.Params()),)), worker,
                     on_progress=on_progress, cancel=cancel, progress_interval_s=0.02)
    assert leftovers(tmp_path, src) == []
    assert worker.lanes == ()


def test_a_pipelined_lane_gives_the_same_pictures_as_frame_by_frame(worker, library):
    """The lane prepares frame N+1 (segmentation in the CPU pool) before it applies frame N; the
    masks, and so the pictures, are exactly those of one frame at a time (the live path)."""
    from livegen.bench.pipeline import scene_loop

    frames = [av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24") for f in scene_loop(256, 144, 8)]
    one_by_one = library.chain("blur")
    expected = []
    for index, frame in enumerate(frames):
        work = Frame(index, rgb=frame.to_ndarray(format="rgb24"), pool=worker.pool)
        one_by_one.run(work)
        expected.append(work.rgb)
    one_by_one.close()
    lane = worker.open_lane("pipelined", library.chain("blur"), depth=4)
    assert lane.chain.prepares_ahead
    pending, results = [], []
    for frame in frames:
        if len(pending) == lane.depth:
            results.append(pending.pop(0).result(timeout=10))
        pending.append(lane.submit(frame))
    results += [future.result(timeout=10) for future in pending]
    worker.close_lane(lane)
    for result, rgb in zip(results, expected, strict=True):
        assert np.array_equal(result.frame.to_ndarray(format="rgb24"), rgb)


@pytest.mark.parametrize(("name", "make", "message"), [
    ("missing.mp4", None, "no such file"),
    ("noise.mp4", lambda p: p.write_bytes(os.urandom(4096)), "not a video file that can be decoded"),
    ("notes.mp4", lambda p: p.write_text("not a video\n" * 50), "not a video file that can be decoded"),
    ("notes.txt", lambda p: p.write_text("not a video\n" * 50), "is a Tele-typewriter file; process takes MP4, MOV"),
])
def test_the_command_refuses_an_input_it_cannot_decode(tmp_path, capsys, name, make, message):
    src = tmp_path / name
    if make is not None:
        make(src)
    assert main(["process", str(src), "-o", str(tmp_path / "out.mp4")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("livegen process: ") and str(src) in err and message in err, err
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "{dir}/out.avi"], "unsupported output extension .avi: write .mp4, .mov, .mkv, .webm"),
    (["-o", "{dir}/in.mp4"], "is the input file"),
    (["-o", "{dir}/none/out.mp4"], "does not exist"),
    (["-o", "{dir}/out.mp4", "--effects", '[{"params": {}}]'], "--effects: 0.name: Field required"),
    (["-o", "{dir}/out.mp4", "--params", "[1, 2]"], "--params: value: Input should be an object"),
    (["-o", "{dir}/out.mp4", "--preset", "nope"], "unknown preset 'nope' (have: blur, edges"),
    (["-o", "{dir}/out.mp4", "--effects", '[{"name": "sparkle"}]'], "unknown effect 'sparkle'"),
    (["-o", "{dir}/out.mp4", "--preset", "grayscale", "--params", '{"blur": {"x": 1}}'],
     "params.blur: the chain has no 'blur' effect"),
])
def test_the_command_answers_bad_arguments_with_exit_code_2(tmp_path, capsys, args, message):
    src = make_clip(tmp_path / "in.mp4", frames=4, audio=False)
    code = main(["process", str(src), *[a.replace("{dir}", str(tmp_path)) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and "livegen process: " in err and message in err, err
    assert leftovers(tmp_path, src) == []


def test_the_command_applies_effects_and_params_given_as_json(tmp_path, capsys):
    src = make_clip(tmp_path / "in.mp4", frames=10)
    effects = '[{"name": "grayscale", "params": {"amount": 1.0}}, {"name": "passthrough"}]'
    assert main(["process", str(src), "-o", str(tmp_path / "gray.mkv"), "--effects", effects]) == 0
    assert main(["process", str(src), "-o", str(tmp_path / "kept.mkv"), "--effects", effects,
                 "--params", '{"grayscale": {"amount": 0.0}}']) == 0
    out = capsys.readouterr().out
    assert re.search(r"wrote .*gray\.mkv \(custom\): 10 frames, 0\.7 s of video in [\d.]+ s", out), out
    assert all(gray(rgb) for rgb in decoded(tmp_path / "gray.mkv")["rgb"])
    assert not any(gray(rgb) for rgb in decoded(tmp_path / "kept.mkv")["rgb"])
    assert decoded(tmp_path / "kept.mkv")["audio"][0] == "aac"  # copied as it came


def _command(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "livegen", "process", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_command_prints_progress_lines_when_not_on_a_terminal(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=30)
    process = _command(str(src), "-o", str(tmp_path / "out.mp4"), "--preset", "grayscale",
                       "--progress-interval", "0.01")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    lines = re.findall(r"^livegen process: (\d+)/30 frames \(\d+ %\), [\d.]+ fps, ETA [\d:?]+, elapsed [\d:]+$", err,
                       re.MULTILINE)
    assert len(lines) >= 2 and lines[0] == "0" and lines[-1] == "30", err
    assert "\r" not in err and "\x1b" not in err
    assert "wrote" in out and "30 frames" in out and "× real time" in out


def test_ctrl_c_stops_the_command_and_leaves_no_file(tmp_path):
    # 720p, so that the job runs for seconds after its first frames (at 320x240 it is over in
    # a fraction of one, before a busy test process has read the first progress line)
    src = make_clip(tmp_path / "in.mp4", frames=300, audio=False, size=(1280, 720))
    effects = '[{"name": "edges"}, {"name": "edges"}, {"name": "edges"}, {"name": "edges"}]'
    process = _command(str(src), "-o", str(tmp_path / "out.mp4"), "--effects", effects, "--progress-interval", "0.05")
    deadline = time.monotonic() + 60
    assert process.stderr is not None
    for line in process.stderr:  # the first frames are through: the output is being written
        if (m := re.match(r"livegen process: (\d+)/300 frames", line)) and int(m.group(1)) > 0:
            break
        assert time.monotonic() < deadline, "no progress"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "stopped (SIGINT); no output written" in err
    assert leftovers(tmp_path, src) == []


def test_an_unusable_file_is_a_permanent_error(tmp_path, worker):
    src = tmp_path / "noise.mov"
    src.write_bytes(os.urandom(2048))
    with pytest.raises(FileError) as raised:
        process_file(src, tmp_path / "out.mp4", build_chain(PresetSpec(name="g", effects=[EffectSpec(name="grayscale")])),
                     worker)
    assert raised.value.kind == "permanent" and raised.value.side == "input" and worker.lanes == ()


def test_on_a_terminal_progress_is_one_bar_redrawn_in_place():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    report = ProgressReport(terminal, interval=0.0)
    for progress in (Progress(0, 300, 0.0, None, 0.0), Progress(150, 300, 60.0, 3.4, 2.5),
                     Progress(300, 300, 60.0, 0.0, 5.0)):
        report(progress)
    report.close()
    text = terminal.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n")
    assert "\r[" + "#" * 15 + "." * 15 + "]  50 %  150/300 frames   60.0 fps  ETA 0:03" in text
