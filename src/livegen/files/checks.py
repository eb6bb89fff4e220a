"""What a file job checks before any work: the output's name, and that the input is a video in
a container we take (opened to be sure). Light on imports (PyAV, no torch), so that the command
line answers a bad argument at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av

from livegen.errors import LivegenError
from livegen.files.containers import (
    INPUT_KINDS,
    OutputFormat,
    output_format,
    readable_format,
    supported_outputs,
)


class FileError(LivegenError):
    """A permanent problem with a job's files: the input is missing, not a video we can decode or
    in a container we do not take; the output's name or folder is unusable. Retrying will not
    help. `side` says which file ("input" or "output")."""

    status = 422
    title = "Unusable file"
    kind = "permanent"

    def __init__(self, detail: str, *, side: str = "input"):
        super().__init__(detail)
        self.side = side



def check_output(src: Path, dst: Path) -> OutputFormat:
    """The output's format, or `FileError` (side "output") for a name we cannot write."""
    fmt = output_format(dst)
    if fmt is None:
        shown = dst.suffix or "(none)"
        raise FileError(f"unsupported output extension {shown}: write {supported_outputs()}", side="output")
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and os.path.samefile(src, dst)):
        raise FileError(f"the output {dst} is the input file: write to another name", side="output")
    if dst.is_dir():
        raise FileError(f"the output {dst} is a folder", side="output")
    if not dst.parent.is_dir():
        raise FileError(f"the output folder {dst.parent} does not exist", side="output")
    return fmt


def open_input(src: Path) -> Any:
    """`src` opened for decoding (an av InputContainer with a video stream), or `FileError`."""
    if not src.exists():
        raise FileError(f"no such file: {src}")
    if not src.is_file():
        raise FileError(f"not a file: {src}")
    try:
        container = av.open(str(src), "r")
    except av.error.FFmpegError as exc:
        raise FileError(f"{src} is not a video file that can be decoded ({ffmpeg_reason(exc)})") from None
    try:
        if not readable_format(container.format.name):
            raise FileError(f"{src} is a {container.format.long_name} file; process takes {INPUT_KINDS}")
        video = video_stream(container)
        if video is None:
            raise FileError(f"{src} has no video stream")
        if video.codec_context is None or not video.width or not video.height:
            raise FileError(f"{src}: its video ({video.codec_context and video.codec_context.name}) cannot be decoded")
    except BaseException:
        container.close()
        raise
    return container


def video_stream(container: Any) -> Any | None:
    """The container's video: its first video stream that is not a cover picture."""
    return next(
        (s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None
    )


def ffmpeg_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def frames_expected(video: Any, container: Any) -> int | None:
    """The video's frame count as the container states it, or its duration × frame rate."""
    if video.frames:
        return int(video.frames)
    rate = video.average_rate or video.guessed_rate
    if not rate:
        return None
    if video.duration is not None and video.time_base is not None:
        seconds = float(video.duration * video.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return None
    return max(1, round(seconds * float(rate))) if seconds > 0 else None


