"""Video encoding for the encode-once fan-out.

`VideoEncoder` wraps one PyAV codec context (H.264 through NVENC or libx264, or VP8 through
libvpx) tuned for live: no B-frames, zero-latency rate control, parameter sets in-band, long GOP
with keyframes on demand. `StreamEncoder` is a stream's encoding thread: it takes the newest
processed frame from its slot and encodes it once for every codec a viewer uses. A
`ViewerEncoder` is one viewer's own encoder in per_viewer mode: the same settings, so the two
modes differ only in how often a frame is encoded.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import av
from av.video.frame import PictureType

from livegen.config import OutputSettings
from livegen.flow.ratelog import RateLimitedLog
from livegen.flow.slot import FrameSlot
from livegen.flow.stage import ThreadStage
from livegen.observability.latency import LatencyWindow
from livegen.observability.metrics import ByteRate, LatencyHistogram

log = logging.getLogger(__name__)

RTP_VIDEO_CLOCK = fractions.Fraction(1, 90_000)
REFERENCE_PIXELS = 1280 * 720
REFERENCE_BITRATE = 2_500_000


def target_bitrate(settings: OutputSettings, width: int, height: int) -> int:
    if settings.bitrate_bps is not None:
        return min(settings.bitrate_bps, settings.max_bitrate_bps)
    scaled = REFERENCE_BITRATE * (width * height) / REFERENCE_PIXELS
    return int(min(max(scaled, 300_000), settings.max_bitrate_bps))


def encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


class VideoEncoder:
    """One codec context for one codec; reopened when the frame size changes."""

    def __init__(self, codec: str, settings: OutputSettings, fps: float = 30.0):
        self.codec = codec
        self.settings = settings
        self.fps = fps
        self.context: av.CodecContext | None = None
        self.implementation = ""
        self.options: dict[str, str] = {}
        """The options the open context was given (PyAV empties `context.options` on open)."""
        self._size: tuple[int, int] | None = None
        self._last_pts: int | None = None
        self._offset = 0
        self._rebase = False

    def _candidates(self) -> list[str]:
        if self.codec == "VP8":
            return ["libvpx"]
        choice = self.settings.h264_encoder
        if choice == "auto":
            return ["h264_nvenc", "libx264"] if encoder_available("h264_nvenc") else ["libx264"]
        return [choice]

    def _open(self, width: int, height: int) -> None:
        errors = []
        for name in self._candidates():
            try:
                self.context = self._create(name, width, height)
                self.options = dict(self.context.options)
                self.context.open()
            except Exception as exc:  # NVENC listed but no usable GPU, for example
                errors.append(f"{name}: {exc}")
                continue
            self.implementation = name
            self._size = (width, height)
            log.info("encoding %s %dx%d with %s at %d bit/s", self.codec, width, height, name, self.context.bit_rate)
            return
        raise RuntimeError(f"no {self.codec} encoder could be opened ({'; '.join(errors)})")

    def _create(self, name: str, width: int, height: int) -> av.CodecContext:
        context = av.CodecContext.create(name, "w")
        context.width, context.height = width, height
        context.pix_fmt = "yuv420p"
        context.time_base = RTP_VIDEO_CLOCK
        context.framerate = fractions.Fraction(round(self.fps), 1)
        bitrate = target_bitrate(self.settings, width, height)
        context.bit_rate = bitrate
        context.gop_size = max(1, round(self.settings.keyframe_interval_s * self.fps))
        context.max_b_frames = 0
        # A VBV cap of one second at the target rate: average-bitrate control alone swings 4x
        # on a static picture, and every viewer pays per packet.
        capped = {"maxrate": str(bitrate), "bufsize": str(bitrate)}
        if name == "libx264":
            context.profile = "Baseline"  # what every WebRTC browser decodes (42e01f)
            context.options = capped | {
                "preset": self.settings.x264_preset,
                "tune": "zerolatency",
                "level": "3.1" if width * height <= REFERENCE_PIXELS else "4.1",
                "x264-params": "scenecut=0:repeat-headers=1:nal-hrd=none",
            }
        elif name == "h264_nvenc":
            context.profile = "baseline"
            context.options = capped | {"preset": "p2", "tune": "ull", "zerolatency": "1", "rc": "cbr", "forced-idr": "1"}
        else:  # libvpx (VP8)
            context.options = capped | {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",
                "error-resilient": "1",
                "auto-alt-ref": "0",
            }
        return context

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> list[av.Packet]:
        size = (frame.width, frame.height)
        if self.context is None or size != self._size:
            self._open(*size)
            self._last_pts = None
            keyframe = True
        # encoders want strictly increasing pts in their time base (90 kHz, the RTP clock)
        pts = int(frame.pts * frame.time_base / RTP_VIDEO_CLOCK) if frame.pts is not None and frame.time_base else 0
        if self._rebase:  # a new source (slate, a returning publisher): continue one frame on
            self._rebase = False
            self._offset = 0 if self._last_pts is None else self._last_pts + round(RTP_VIDEO_CLOCK.denominator / self.fps) - pts
        pts += self._offset
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        frame.pts, frame.time_base = pts, RTP_VIDEO_CLOCK
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        packets = list(self.context.encode(frame))  # type: ignore[union-attr]
        for packet in packets:
            packet.time_base = RTP_VIDEO_CLOCK
        return packets

    def rebase(self) -> None:
        """The next frame starts a new source timeline: its pts continues this one's."""
        self._rebase = True

    def describe(self) -> dict[str, Any]:
        """What the open encoder runs (implementation, profile, bitrate, keyframe interval and
        its options, e.g. x264's preset and tune); empty before the first frame."""
        context = self.context  # one read: the encoding thread may close it meanwhile
        if context is None:
            return {}
        return {
            "encoder": self.implementation,
            "profile": context.profile,
            "bitrate_bps": context.bit_rate,
            "gop_frames": context.gop_size,
            **self.options,
        }

    def close(self) -> None:
        self.context = None


class ViewerEncoder(VideoEncoder):
    """One viewer's own encoder (per_viewer mode), with the settings encode_once uses.

    The viewers' encoders share each frame and run at once on the senders' threads, while
    encoding stamps the frame's pts and picture type: each encodes its own copy."""

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> list[av.Packet]:
        if frame.width % 2 or frame.height % 2:  # a yuv420p array needs even sizes
            own = frame.reformat(format="rgb24").reformat(format="yuv420p")
        else:
            own = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
        own.pts, own.time_base = frame.pts, frame.time_base
        return super().encode(own, keyframe)


class StreamEncoder(ThreadStage):
    """A stream's encoding thread. `deliver(codec, packets)` is called from this thread."""

    def __init__(
        self,
        name: str,
        settings: OutputSettings,
        deliver: Callable[[str, list[av.Packet]], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(f"livegen-encode-{name}")
        self.stream = name
        self.settings = settings
        self._deliver = deliver
        self._clock = clock
        self.slot: FrameSlot[av.VideoFrame] = FrameSlot(on_put=self.wake)
        self._lock = threading.Lock()
        self._encoders: dict[str, VideoEncoder] = {}
        self._keyframe_wanted: set[str] = set()
        self._last_keyframe: dict[str, float] = {}
        self.max_keyframe_interval_s: float | None = None
        """When set (outputs to platforms run), a keyframe at least this often."""
        self.frames_encoded = 0
        self.frames_dropped = 0
        self.encode_errors = RateLimitedLog(log)
        """Frames an encoder failed on: that encoder is reopened on the next frame (a keyframe)."""
        self.keyframes_forced = 0
        self.encode_ms = LatencyWindow()
        self.encode_histogram = LatencyHistogram()
        self.bytes_out: dict[str, ByteRate] = {}
        """Encoded bytes handed to viewers and the bitrate, by codec (for the metrics)."""

    def set_codecs(self, codecs: Iterable[str]) -> None:
        """Encode for exactly these codecs from the next frame on."""
        wanted = set(codecs)
        with self._lock:
            for codec in list(self._encoders):
                if codec not in wanted:
                    self._encoders.pop(codec).close()
            for codec in wanted - set(self._encoders):
                self._encoders[codec] = VideoEncoder(codec, self.settings)
                self._keyframe_wanted.add(codec)

    def request_keyframe(self, codec: str) -> None:
        with self._lock:
            self._keyframe_wanted.add(codec)

    def restart_timeline(self) -> None:
        """Frames from a new source follow (the slate, a returning publisher): their pts carry
        on from the last frame's, so viewers and outputs see one continuous timeline."""
        with self._lock:
            for encoder in self._encoders.values():
                encoder.rebase()

    def submit(self, frame: av.VideoFrame) -> None:
        if self.slot.put(frame) is not None:
            self.frames_dropped += 1

    def implementations(self) -> dict[str, str]:
        with self._lock:
            return {codec: enc.implementation for codec, enc in self._encoders.items()}

    def settings_in_use(self) -> dict[str, dict[str, Any]]:
        """`VideoEncoder.describe()` of each open encoder, by codec."""
        with self._lock:
            encoders = list(self._encoders.values())
        return {enc.codec: described for enc in encoders if (described := enc.describe())}

    def _take_keyframe(self, codec: str) -> bool:
        """Whether this frame should be a keyframe for `codec`, honouring the rate limit."""
        now = self._clock()
        with self._lock:
            interval = self.max_keyframe_interval_s
            if interval is not None and now - self._last_keyframe.get(codec, -1e9) >= interval:
                self._keyframe_wanted.add(codec)
            if codec not in self._keyframe_wanted:
                return False
            if now - self._last_keyframe.get(codec, -1e9) < self.settings.min_keyframe_gap_s:
                return False
            self._keyframe_wanted.discard(codec)
            self._last_keyframe[codec] = now
            return True

    def step(self) -> bool:
        frame = self.slot.take()
        if frame is None:
            return False
        with self._lock:
            encoders = list(self._encoders.values())
        started = time.perf_counter()
        for encoder in encoders:
            keyframe = self._take_keyframe(encoder.codec)
            try:
                packets = encoder.encode(frame, keyframe)
            except Exception:
                self.encode_errors.failure("[%s] %s encoding failed; the encoder reopens on the next frame",
                                           self.stream, encoder.codec)
                encoder.close()
                continue
            if keyframe:
                self.keyframes_forced += 1
            if any(p.is_keyframe for p in packets):
                with self._lock:
                    self._last_keyframe[encoder.codec] = self._clock()
            if packets:
                sent = self.bytes_out.get(encoder.codec) or self.bytes_out.setdefault(encoder.codec, ByteRate())
                sent.add(sum(p.size for p in packets))
                try:
                    self._deliver(encoder.codec, packets)
                except RuntimeError:  # loop closed: the stream is going away
                    self.halt()
                    return False
        if encoders:
            self.frames_encoded += 1
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            self.encode_ms.add(elapsed_ms)
            self.encode_histogram.observe(elapsed_ms)
        return True
