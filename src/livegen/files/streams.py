"""`OutputStreams`: the output file of a job being written, its video encoder and its audio.

Owned by the job's encode thread once opened: frames go in in order and come out encoded and
muxed, with the input's timestamps and time base; audio is copied as it came (remuxed) or
encoded again, as `containers` decides for the output's container.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

import av

from livegen.files.containers import (
    AUDIO_BIT_RATE,
    OutputFormat,
    audio_rate,
    vp8_bit_rate,
)
from livegen.media.convert import rgb_to_frame

log = logging.getLogger(__name__)

FALLBACK_RATE = 30


def lower_priority(nice: int) -> None:
    """Run the calling thread (and the threads it starts from now on, such as the codecs') at
    niceness `nice` at least; on Linux a thread's id names it alone for setpriority."""
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at the same priority
        log.debug("could not lower a job thread's priority: %s", exc)


class OutputStreams:
    def __init__(self, container: Any, video: Any, audio: Any | None, copy_audio: bool):
        self.container = container
        self.video = video
        self.audio = audio
        self.copy_audio_packets = copy_audio
        self.audio_mode = "none" if audio is None else ("copied" if copy_audio else f"encoded ({audio.codec_context.name})")

    @classmethod
    def open(cls, path: Path, fmt: OutputFormat, video_in: Any, audio_in: Any | None) -> OutputStreams:
        """The output at `path` (the job's temporary name), in `fmt`'s container, with a video
        stream like `video_in` and, when there is input audio, an audio stream for it."""
        container = av.open(str(path), "w", format=fmt.muxer)
        try:
            rate = video_in.average_rate or video_in.guessed_rate or FALLBACK_RATE
            video = container.add_stream(fmt.video_codec, rate=rate, options=dict(fmt.video_options))
            video.width = video_in.width // 2 * 2  # 4:2:0 needs even sizes
            video.height = video_in.height // 2 * 2
            video.pix_fmt = "yuv420p"
            if video_in.time_base is not None:  # the input's timestamps, as they are
                video.time_base = video_in.time_base
                video.codec_context.time_base = video_in.time_base
            if fmt.video_codec == "libvpx":
                video.bit_rate = vp8_bit_rate(video.width, video.height, float(rate))
            audio, copy = None, False
            if audio_in is not None:
                copy = audio_in.codec_context.name in fmt.audio_copy
                audio = container.add_stream_from_template(audio_in) if copy else cls._audio_encoder(
                    container, fmt, audio_in)
        except BaseException:
            container.close()
            path.unlink(missing_ok=True)
            raise
        return cls(container, video, audio, copy)

    @staticmethod
    def _audio_encoder(container: Any, fmt: OutputFormat, audio_in: Any) -> Any:
        context = audio_in.codec_context
        rate = audio_rate(fmt.audio_codec, context.sample_rate or 48000)
        audio = container.add_stream(fmt.audio_codec, rate=rate)
        channels = context.channels or 2
        audio.layout = context.layout.name if channels <= 2 else "stereo"
        audio.bit_rate = AUDIO_BIT_RATE
        return audio

    @staticmethod
    def encodable(frame: av.VideoFrame) -> av.VideoFrame:
        """A processed RGB picture in 4:2:0, converted as the live path converts it (other
        formats and odd sizes are left to the encoder's own conversion)."""
        if frame.format.name == "rgb24" and frame.width % 2 == 0 and frame.height % 2 == 0:
            return rgb_to_frame(frame.to_ndarray(format="rgb24"), like=frame)
        return frame

    def write_video(self, frame: av.VideoFrame) -> None:
        self.container.mux(self.video.encode(frame))

    def copy_audio(self, packet: av.Packet) -> None:
        packet.stream = self.audio
        self.container.mux(packet)

    def write_audio(self, frame: av.AudioFrame) -> None:
        self.container.mux(self.audio.encode(frame))

    def flush(self) -> None:
        """The encoders' last packets (B-frames, audio held back)."""
        self.container.mux(self.video.encode(None))
        if self.audio is not None and not self.copy_audio_packets:
            self.container.mux(self.audio.encode(None))

    def close(self) -> None:
        """Write the container's index and close the file."""
        self.container.close()

    def abandon(self) -> None:
        """Close without caring whether the file is complete (it is about to be removed)."""
        with suppress(Exception):
            self.container.close()
