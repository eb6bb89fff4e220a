"""Which files `files.process` reads and writes, and how each output is encoded.

Inputs are the containers a camera, a phone or a screen recorder writes: MP4/MOV and
Matroska/WebM, with any video codec FFmpeg decodes. An output's container follows from its
extension; its video is H.264 (libx264) in MP4, MOV and MKV, and VP8 (libvpx) in WebM, with
encoder settings chosen for speed (a file job should take less time than the video lasts). Audio
is copied packet for packet when the output container takes the input's codec, else transcoded:
AAC in MP4/MOV/MKV, Opus in WebM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

INPUT_FORMATS = frozenset({"mov", "mp4", "matroska", "webm"})
"""Demuxer names (FFmpeg reports e.g. "mov,mp4,m4a,3gp,3g2,mj2"): any of these in it."""
INPUT_KINDS = "MP4, MOV, WebM or MKV"

X264_OPTIONS = {"preset": "ultrafast", "crf": "20"}
"""CRF holds the quality steady; ultrafast because on a small node the encoder competes with the
effects for the same cores: at 720p it takes about 6 ms of CPU a frame where superfast takes
about 11 (`livegen bench process`), the price being larger files (no CABAC, no B-frames)."""
VP8_OPTIONS = {"deadline": "good", "cpu-used": "5", "crf": "10", "auto-alt-ref": "0"}
"""libvpx's `good` deadline at cpu-used 5 is faster than `realtime` for a whole file, and CRF
(bounded by the bit rate below) keeps the quality steady."""
VP8_BITS_PER_PIXEL = 0.12
"""Bit-rate cap for VP8's CRF, per pixel per frame: about 3.3 Mbit/s at 720p30."""
AUDIO_BIT_RATE = 128_000
OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


@dataclass(frozen=True)
class OutputFormat:
    extension: str
    muxer: str
    video_codec: str
    video_options: dict[str, str]
    audio_codec: str
    """The encoder used when the input's audio codec is not in `audio_copy`."""
    audio_copy: frozenset[str] = field(default_factory=frozenset)
    """Audio codecs this container takes as they are (remuxed, not re-encoded)."""


OUTPUTS: dict[str, OutputFormat] = {
    ".mp4": OutputFormat(".mp4", "mp4", "libx264", X264_OPTIONS, "aac", frozenset({"aac", "mp3", "alac"})),
    ".mov": OutputFormat(
        ".mov", "mov", "libx264", X264_OPTIONS, "aac", frozenset({"aac", "mp3", "alac", "pcm_s16le", "pcm_s24le"})
    ),
    ".mkv": OutputFormat(
        ".mkv", "matroska", "libx264", X264_OPTIONS, "aac",
        frozenset({"aac", "opus", "vorbis", "mp3", "flac", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"}),
    ),
    ".webm": OutputFormat(".webm", "webm", "libvpx", VP8_OPTIONS, "libopus", frozenset({"opus", "vorbis"})),
}


def output_format(path: Path) -> OutputFormat | None:
    """The output format for `path`'s extension (any case); None when it is not one we write."""
    return OUTPUTS.get(path.suffix.lower())


def supported_outputs() -> str:
    return ", ".join(OUTPUTS)


def readable_format(demuxer: str) -> bool:
    """Whether a container FFmpeg opened as `demuxer` is one of the inputs we take."""
    return bool(INPUT_FORMATS & set(demuxer.split(",")))


def audio_rate(codec: str, rate: int) -> int:
    """The sample rate the audio encoder `codec` is given for input at `rate`: Opus takes only
    a few rates (48 kHz when the input's is not one); AAC keeps the input's."""
    if codec == "libopus":
        return rate if rate in OPUS_RATES else 48000
    return rate if 8000 <= rate <= 96000 else 48000


def vp8_bit_rate(width: int, height: int, fps: float) -> int:
    return int(width * height * max(fps, 1.0) * VP8_BITS_PER_PIXEL)
