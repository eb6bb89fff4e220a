"""`AacEncoder`: Opus in, AAC out, on a timeline paced by the clock — silence where no Opus came,
the publisher's sound where it arrived, muxable into FLV and MP4 through its template."""

from __future__ import annotations

import fractions
import io
import threading
import time

import av
import numpy as np
import pytest

from livegen.media.aac import AacEncoder
from livegen.media.packet import MediaPacket
from tests.nginx_rtmp import aac_packets

RATE = 48_000


def opus_payloads(seconds: float, frequency: float = 440.0, beeps: bool = False) -> list[bytes]:
    """20 ms Opus payloads of a tone, as a browser would send them; `beeps`: the tone for 100 ms
    every half second, silence between."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = RATE, "stereo", "s16"
    encoder.time_base = fractions.Fraction(1, RATE)
    encoder.open()
    payloads = []
    for n in range(int(seconds * 50)):
        t = (n * 960 + np.arange(960)) / RATE
        tone = (8000 * np.sin(2 * np.pi * frequency * t) * (n % 25 < 5 or not beeps)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2)[None, :], format="s16", layout="stereo")
        frame.sample_rate, frame.pts = RATE, n * 960
        payloads += [bytes(p) for p in encoder.encode(frame)]
    return payloads


class Collector:
    def __init__(self) -> None:
        self.items: list[MediaPacket] = []
        self.lock = threading.Lock()

    def __call__(self, item: MediaPacket) -> None:
        with self.lock:
            self.items.append(item)

    def snapshot(self) -> list[MediaPacket]:
        with self.lock:
            return list(self.items)


def decode(encoder: AacEncoder, items: list[MediaPacket]) -> np.ndarray:
    """The left channel, sample 0 being the first packet's `at`."""
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = encoder.template.codec_context.extradata
    samples = [f.to_ndarray()[0] for item in items for f in decoder.decode(av.Packet(bytes(item.packet)))]
    return np.concatenate(samples)


def assert_continuous(items: list[MediaPacket]) -> None:
    assert [i.packet.pts for i in items] == [1024 * n for n in range(len(items))]
    assert all(i.packet.time_base == fractions.Fraction(1, RATE) and i.kind == "audio" for i in items)
    ats = np.array([i.at for i in items])
    assert np.allclose(ats - ats[0], np.arange(len(items)) * 1024 / RATE, atol=1e-6)


def test_silence_keeps_audio_running_in_real_time_without_opus() -> None:
    collected = Collector()
    encoder = AacEncoder("quiet", collected)
    started = time.monotonic()
    encoder.start()
    time.sleep(0.6)
    items = collected.snapshot()
    elapsed = time.monotonic() - started
    assert encoder.stop()
    due = elapsed * RATE / 1024  # packets of real time so far (the encoder holds one back)
    assert due - 6 <= len(items) <= due + 1, "made at real-time pace: none ahead of time, few behind"
    assert_continuous(items)
    assert items[0].at == pytest.approx(started - 1024 / RATE, abs=0.03)
    assert not np.any(decode(encoder, items))
    assert encoder.silence_s == pytest.approx(elapsed, abs=0.1)
    assert not encoder.running


def test_opus_comes_out_as_aac_where_it_arrived_and_pauses_are_filled() -> None:
    collected = Collector()
    encoder = AacEncoder("tone", collected)
    encoder.start()
    tone = opus_payloads(0.3)
    bursts = []
    for pause in (0.2, 0.4):  # silence first, then a publisher that goes quiet and comes back
        time.sleep(pause)
        bursts.append(time.monotonic())
        for n, payload in enumerate(tone):
            time.sleep(max(0.0, bursts[-1] + n * 0.02 - time.monotonic()))
            encoder.push_opus(payload)
    time.sleep(0.25)
    assert encoder.stop()
    items = collected.snapshot()
    assert_continuous(items)
    signal = decode(encoder, items)
    loud = np.abs(signal) > 0.05
    origin = items[0].at  # the clock time of `signal[0]`, as the muxers place it

    def index(at: float) -> int:
        return int((at - origin) * RATE)

    for pushed in bursts:  # each burst starts where it arrived
        onset = origin + (index(pushed - 0.05) + int(np.argmax(loud[index(pushed - 0.05) :]))) / RATE
        assert onset == pytest.approx(pushed, abs=0.04)
    first = signal[index(bursts[0] + 0.05) :][: RATE // 5]
    spectrum = np.abs(np.fft.rfft(first))
    assert np.argmax(spectrum) * RATE / len(first) == pytest.approx(440, abs=10)
    gap = loud[index(bursts[0] + 0.4) : index(bursts[1] - 0.05)]
    assert not gap.any(), "silence between the bursts"
    assert encoder.payloads_in == 2 * len(tone) and encoder.decode_errors == 0


def test_inbox_is_bounded_and_a_burst_cannot_run_ahead_of_the_clock() -> None:
    collected = Collector()
    encoder = AacEncoder("burst", collected, queue_payloads=50)
    for payload in opus_payloads(2.4):  # 120 payloads while the stage is not running
        encoder.push_opus(payload)
    assert encoder.payloads_dropped == 70
    encoder.start()
    time.sleep(0.3)
    assert encoder.stop()
    items = collected.snapshot()
    assert_continuous(items)
    assert encoder.payloads_discarded >= 40, "50 payloads at once: most would put audio ahead of time"
    end = items[-1].at + 1024 / RATE
    assert end <= time.monotonic() + 0.15


def test_encoder_rejects_garbage_without_stopping() -> None:
    collected = Collector()
    encoder = AacEncoder("garbage", collected)
    encoder.start()
    encoder.push_opus(b"\xff\xfe\x00")
    encoder.push_opus(b"")
    time.sleep(0.3)
    assert encoder.running
    assert encoder.stop()
    assert collected.snapshot(), "silence went on"


@pytest.mark.parametrize("format_name", ["flv", "mp4"])
def test_template_makes_aac_streams_that_mux_and_decode(format_name: str) -> None:
    encoder = AacEncoder("template", lambda item: None)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=format_name) as out:
        stream = out.add_stream_from_template(encoder.template)
        for packet in aac_packets(0.5):
            packet.stream = stream
            out.mux(packet)
    buffer.seek(0)
    with av.open(buffer) as played:
        audio = played.streams.audio[0]
        assert audio.codec_context.name == "aac"
        frames = list(played.decode(audio))  # FLV's own header always says 44.1 kHz for AAC
    assert {(f.sample_rate, f.layout.name) for f in frames} == {(RATE, "stereo")}
    assert sum(f.samples for f in frames) >= 0.45 * RATE


@pytest.mark.parametrize("change_s", [0.05, -0.05])
def test_a_lasting_change_in_when_opus_arrives_moves_the_audio_with_it(change_s: float) -> None:
    """The delay audio is held back by changes (the video's did): the beeps keep to when their
    payloads arrived, not to where the sound before them ended."""
    collected = Collector()
    encoder = AacEncoder("delay", collected)
    encoder.start()
    payloads = opus_payloads(3.6, 1000.0, beeps=True)
    started = time.monotonic() + 0.05
    pushed = []
    for n, payload in enumerate(payloads):
        due = started + n * 0.02 + (change_s if n >= 60 else 0.0)  # from 1.2 s on
        time.sleep(max(0.0, due - time.monotonic()))
        pushed.append(time.monotonic())
        encoder.push_opus(payload)
    time.sleep(0.1)
    assert encoder.stop()
    items = collected.snapshot()
    assert_continuous(items)
    loud = np.abs(decode(encoder, items)) > 0.05
    rises = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    origin = items[0].at
    onsets = [origin + rise / RATE for rise, quiet in zip(rises, np.diff(rises, prepend=-RATE)) if quiet > RATE // 10]
    # each beep's lateness against its first payload's arrival (the same Opus decoder delay in all)
    lateness = [min(onsets, key=lambda onset: abs(onset - pushed[n])) - pushed[n] for n in range(0, len(payloads), 25)]
    before, after = lateness[:3], lateness[5:]  # beeps before the change; a second after it
    assert max(before) - min(before) < 0.01
    assert all(abs(late - np.median(before)) < 0.025 for late in after), (before, after)
