"""`AacEncoder`: a stream's audio as AAC-LC (48 kHz stereo), encoded once for every FLV and MP4
output (RTMP pushes, recordings); WHEP viewers and WHIP outputs keep the publisher's Opus.

In: the publisher's Opus payloads through `push_opus`, from the event loop, already delayed to
be in sync with the video. Out: `on_packet(MediaPacket("audio", packet, at))` on this stage's
thread for every AAC packet, pts in 1/48000 continuous from 0, `at` the monotonic time the
packet's audio starts (the clock muxers align it with the video on).

The AAC timeline is paced by the clock, not by what arrives. It starts when the stage starts and
while no Opus came for `silence_after_s` (a stream without audio, a publisher gone) silence fills
it at real-time pace, so outputs always get continuous audio. Opus is placed where its arrival
says it belongs: the first after silence (the stage starting, a publisher back) exactly there,
silence filling up to it; arriving more than `align_s` after the end of what was encoded,
silence fills the gap first; more than `max_ahead_s` before it (a burst after a stall, whose
time silence already filled), it is discarded. Between the two the sound stays continuous and
the jitter of single arrivals is absorbed, but not a lasting offset: when the median over the
last `LAG_WINDOW` payloads (half of them at least) of how late they arrive for the timeline
is more than `slack_s` either way (the video delay audio is held back by changed), silence fills it or a payload is
discarded, so the audio keeps within `slack_s` of the video it was held back for.

Muxers take the AAC stream's parameters (with its AudioSpecificConfig) from `template`, a stream
of a never-written holder container: `out.add_stream_from_template(encoder.template)`.
"""

from __future__ import annotations

import fractions
import io
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import av
import numpy as np
from av.audio.stream import AudioStream

from livegen.flow.stage import ThreadStage
from livegen.media.packet import MediaPacket

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
AAC_CLOCK = fractions.Fraction(1, SAMPLE_RATE)
AAC_FRAME = 1024
LAYOUT = "stereo"
LAG_WINDOW = 50
"""Payloads (a second of 20 ms Opus) whose median lateness says where the audio belongs."""


def _aac_context(context: av.CodecContext) -> None:
    context.sample_rate = SAMPLE_RATE
    context.layout = LAYOUT
    context.format = "fltp"
    context.time_base = AAC_CLOCK
    context.bit_rate = 128_000


class AacEncoder(ThreadStage):
    idle_wait_s = 0.02  # silence is produced in steps about this long

    def __init__(
        self,
        stream: str,
        on_packet: Callable[[MediaPacket], None],
        *,
        queue_payloads: int = 50,
        silence_after_s: float = 0.1,
        align_s: float = 0.06,
        max_ahead_s: float = 0.12,
        slack_s: float = 0.015,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(f"livegen-aac-{stream}")
        self.stream = stream
        self._on_packet = on_packet
        self._clock = clock
        self._capacity = queue_payloads
        self._silence_after_s = silence_after_s
        self._align = round(align_s * SAMPLE_RATE)
        self._max_ahead = round(max_ahead_s * SAMPLE_RATE)
        self._slack = round(slack_s * SAMPLE_RATE)
        self._lags: deque[int] = deque(maxlen=LAG_WINDOW)
        """How much later than the end of the timeline the latest payloads arrived, in samples
        (the gap each would have left), as the timeline is now."""
        self._inbox: deque[tuple[bytes, float]] = deque()
        self._lock = threading.Lock()
        # The template is opened only for its parameters; a second context does the encoding,
        # so muxer threads reading the template never race this thread's encoder.
        self._holder = av.open(io.BytesIO(), "w", format="mp4")
        self._template: AudioStream = self._holder.add_stream("aac", rate=SAMPLE_RATE)
        self._template.layout = LAYOUT
        _aac_context(self._template.codec_context)
        self._template.codec_context.open()
        # Writing the holder's header copies the opened context's parameters, AudioSpecificConfig
        # included, into the stream's codecpar: what `add_stream_from_template` copies. Without
        # it FLV gets no AAC sequence header and players fall back to 44.1 kHz.
        self._holder.start_encoding()
        self._encoder = av.CodecContext.create("aac", "w")
        _aac_context(self._encoder)
        self._encoder.open()
        if self._encoder.extradata != self._template.codec_context.extradata:
            raise RuntimeError("the AAC encoder and its template disagree on the AudioSpecificConfig")
        self._decoder = av.CodecContext.create("opus", "r")
        self._resampler = av.AudioResampler(format="fltp", layout=LAYOUT, rate=SAMPLE_RATE)
        self._fifo = av.AudioFifo()
        self._t0: float | None = None
        self._written = 0
        """Samples placed on the timeline so far (encoded or waiting in the FIFO)."""
        self._encoded = 0
        self._pts_shift: int | None = None
        self._last_opus_at: float | None = None
        self.payloads_in = 0
        self.payloads_dropped = 0
        """Opus payloads dropped because the inbox was full (the oldest go)."""
        self.payloads_discarded = 0
        """Opus decoded but discarded: it arrived too far ahead of the timeline, or audio had
        been running late for a while."""
        self.decode_errors = 0
        self.silence_s = 0.0
        self.packets_out = 0

    @property
    def template(self) -> AudioStream:
        """The AAC stream muxers copy (`add_stream_from_template`): codec, rate, layout and the
        AudioSpecificConfig as extradata. Read-only."""
        return self._template

    def push_opus(self, payload: bytes) -> None:
        """One Opus payload, as it is due now. Thread-safe, never blocks."""
        now = self._clock()
        with self._lock:
            if len(self._inbox) >= self._capacity:
                self._inbox.popleft()
                self.payloads_dropped += 1
            self._inbox.append((payload, now))
            self.payloads_in += 1
        self.wake()

    # ---- the thread -----------------------------------------------------------------------
    def step(self) -> bool:
        with self._lock:
            items = list(self._inbox)
            self._inbox.clear()
        now = self._clock()
        if self._t0 is None:
            self._t0 = min([now] + [at for _, at in items])
        for payload, at in items:
            self._take_opus(payload, at)
        quiet_since = self._last_opus_at if self._last_opus_at is not None else self._t0
        if now - quiet_since > self._silence_after_s:
            self._place_silence(self._position(now) - self._written)
        return bool(items)

    def _position(self, at: float) -> int:
        assert self._t0 is not None
        return round((at - self._t0) * SAMPLE_RATE)

    def _take_opus(self, payload: bytes, at: float) -> None:
        try:
            frames = self._decoder.decode(av.Packet(payload))
        except av.FFmpegError:
            self.decode_errors += 1
            return
        after_silence = self._last_opus_at is None or at - self._last_opus_at > self._silence_after_s
        self._last_opus_at = at
        for decoded in frames:
            for frame in self._resampler.resample(decoded):
                gap = self._position(at) - self._written
                if gap > self._align or (after_silence and gap > 0):
                    # the first after silence or one late after a stall goes where it arrived
                    # at once; what arrived before says nothing about where audio belongs now
                    self._place_silence(gap)
                    self._lags.clear()
                    gap = 0
                elif -gap > self._max_ahead:
                    self._leave_out(frame)
                    continue
                self._lags.append(gap)
                lag = sorted(self._lags)[len(self._lags) // 2] if len(self._lags) > LAG_WINDOW // 2 else 0
                if lag > self._slack:
                    self._place_silence(lag)
                    self._lags = deque((g - lag for g in self._lags), maxlen=LAG_WINDOW)
                elif -lag > max(self._slack, frame.samples // 2):
                    self._leave_out(frame)
                    continue
                self._place(frame)

    def _leave_out(self, frame: av.AudioFrame) -> None:
        """Discard `frame`: its time is already filled. Later payloads arrive that much later for
        the timeline than those before did."""
        self.payloads_discarded += 1
        self._lags = deque((g + frame.samples for g in self._lags), maxlen=LAG_WINDOW)

    def _place_silence(self, samples: int) -> None:
        if samples <= 0:
            return
        silence = av.AudioFrame.from_ndarray(np.zeros((2, samples), np.float32), format="fltp", layout=LAYOUT)
        silence.sample_rate = SAMPLE_RATE
        self.silence_s += samples / SAMPLE_RATE
        self._place(silence)

    def _place(self, frame: av.AudioFrame) -> None:
        frame.pts = None  # the FIFO numbers samples itself; the timeline is `_written`
        self._fifo.write(frame)
        self._written += frame.samples
        while self._fifo.samples >= AAC_FRAME:
            chunk = self._fifo.read(AAC_FRAME)
            chunk.pts, chunk.time_base = self._encoded, AAC_CLOCK
            self._encoded += AAC_FRAME
            for packet in self._encoder.encode(chunk):
                self._emit(packet)

    def _emit(self, packet: av.Packet) -> None:
        assert self._t0 is not None and packet.pts is not None
        if self._pts_shift is None:
            self._pts_shift = -packet.pts  # the encoder's priming packet starts before 0
        # `at`: where the packet's decoded audio meets the input timeline. The priming packet
        # starts before the first input sample, so it starts before t0.
        at = self._t0 + packet.pts / SAMPLE_RATE
        packet.pts = packet.dts = packet.pts + self._pts_shift
        packet.time_base = AAC_CLOCK
        self.packets_out += 1
        self._on_packet(MediaPacket("audio", packet, at))
