"""`RecordingOutput`: a stream recorded to fragmented MP4 (H.264 + AAC, nothing re-encoded) in
`RecordingSettings.dir`.

Crash-safe by construction: `empty_moov` writes the track headers first, then every fragment
(cut at each keyframe and after at most `fragment_s`) is complete in itself, so a node killed
with SIGKILL loses at most the fragment being written and the file still plays. Nothing written
is ever rewritten (no moov at the end, no seek back), so another thread or process can read a
file while it grows: `on_file_opened(path)` says where one starts, `on_file_closed(path)` when it
is complete (both called on the recording's thread: hand the work on, do not block).

Files are `<stream>_<UTC start>_<recording id>_<part>.mp4`; a new part starts at the first
keyframe after `segment_s` (when set) and when the picture size changes. The file being written
is held under an exclusive `flock`: that is how retention and `list_recordings` (after a
restart, say) tell a finished file from a growing one. With `max_bytes`, whenever a file is
opened or closed, the oldest finished recordings of the folder are deleted until it fits,
except those `keep(path)` spares (not uploaded yet, say).

A recording does not retry: an unwritable folder or a full disk ends it `failed` (logged once);
what it wrote up to the last fragment stays playable and is handed to `on_file_closed`.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from av.stream import Stream

from livegen.config import RecordingSettings
from livegen.relay.muxer import MuxingOutput

log = logging.getLogger(__name__)

FILE_NAME = re.compile(r"^(?P<stream>.+)_(?P<started>\d{8}T\d{6}Z)_(?P<id>[0-9a-f]{8})_(?P<part>\d{3,})\.mp4$")
STAMP = "%Y%m%dT%H%M%SZ"


@dataclass
class RecordingFile:
    """One MP4 file of a recording, as the API lists it."""

    path: Path
    stream: str
    recording_id: str
    part: int
    started: float
    """When the file was started (Unix time, second resolution from the name)."""
    bytes: int = 0
    duration_s: float | None = None
    """Known for files written by this process; None for files found in the folder."""
    complete: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "stream": self.stream,
            "recording_id": self.recording_id,
            "part": self.part,
            "started": self.started,
            "bytes": self.bytes,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "complete": self.complete,
        }


def _file_name_part(stream: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stream).lstrip(".")[:64] or "stream"


def _in_use(path: Path) -> bool:
    """Whether a writer holds `path` (its exclusive flock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock


def list_recordings(folder: Path) -> list[RecordingFile]:
    """The recording files in `folder`, oldest first, finished or growing (`complete`): what a
    node restarted on the same folder can offer. Files of other names are left alone."""
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in folder.iterdir():
            match = FILE_NAME.match(path.name)
            if match is None or not path.is_file():
                continue
            started = calendar.timegm(time.strptime(match["started"], STAMP))
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            complete = not _in_use(path)
            found.append(RecordingFile(path, match["stream"], match["id"], int(match["part"]), started, size, None, complete))
    return sorted(found, key=lambda f: (f.started, f.recording_id, f.part))


def enforce_retention(folder: Path, max_bytes: int, keep: Callable[[Path], bool] | None = None) -> list[Path]:
    """Delete the oldest finished recording files until the folder's recordings (growing ones
    included) fit in `max_bytes`, sparing those `keep` says to (not uploaded yet, say); the
    paths deleted."""
    files = list_recordings(folder)
    total = sum(f.bytes for f in files)
    deleted = []
    for file in files:
        if total <= max_bytes:
            break
        if not file.complete or (keep is not None and keep(file.path)):
            continue
        try:
            fd = os.open(file.path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # not taken by a writer since listed
            file.path.unlink()
        except (BlockingIOError, FileNotFoundError):
            continue
        finally:
            os.close(fd)
        total -= file.bytes
        deleted.append(file.path)
        log.info("recordings: deleted %s (%d bytes) to stay under %d bytes", file.path.name, file.bytes, max_bytes)
    return deleted


class RecordingOutput(MuxingOutput):
    kind = "recording"
    format_name = "mp4"

    def __init__(
        self,
        stream: str,
        settings: RecordingSettings,
        audio_template: Stream,
        request_keyframe: Callable[[], None],
        *,
        on_file_opened: Callable[[Path], None] | None = None,
        on_file_closed: Callable[[Path], None] | None = None,
        keep: Callable[[Path], bool] | None = None,
        queue_packets: int = 600,
    ):
        super().__init__(stream, str(settings.dir), audio_template, request_keyframe, queue_packets=queue_packets)
        self.id = self.status.id = secrets.token_hex(4)
        self.settings = settings
        self.folder = Path(settings.dir)
        self.started = time.time()
        self._on_file_opened = on_file_opened
        self._on_file_closed = on_file_closed
        self._keep = keep
        self._files: list[RecordingFile] = []
        self._files_lock = threading.Lock()
        self._lock_fd: int | None = None

    # ---- for the API ----------------------------------------------------------------------
    @property
    def files(self) -> list[RecordingFile]:
        with self._files_lock:
            files = list(self._files)
        for file in files:
            if not file.complete:
                with contextlib.suppress(OSError):
                    file.bytes = file.path.stat().st_size
        return files

    def duration_s(self) -> float:
        files = self.files
        done = sum(f.duration_s or 0.0 for f in files if f.complete)
        timeline = self.timeline
        growing = timeline.duration_s if files and not files[-1].complete and timeline is not None else 0.0
        return done + growing

    def as_json(self) -> dict[str, Any]:
        files = self.files
        return self.status.as_json() | {
            "stream": self.stream,
            "started": self.started,
            "duration_s": round(self.duration_s(), 3),
            "files": [str(f.path) for f in files],
            "bytes": sum(f.bytes for f in files),
        }

    # ---- the muxer's hooks ----------------------------------------------------------------
    def is_permanent(self, exc: BaseException) -> bool:
        return True  # a full disk or an unwritable folder will not fix itself in a backoff

    def container_options(self) -> dict[str, str]:
        return {
            "movflags": "frag_keyframe+empty_moov+default_base_moof",
            "frag_duration": str(int(self.settings.fragment_s * 1_000_000)),
            # without it FFmpeg holds up to 32 KiB in its I/O buffer: the header and, at a low
            # bitrate, whole fragments that a crash would lose; with it, each fragment (the
            # muxer writes nothing in between) reaches the file as soon as it is complete
            "flush_packets": "1",
        }

    def split_due(self, elapsed_s: float) -> bool:
        return self.settings.segment_s is not None and elapsed_s >= self.settings.segment_s

    def open_target(self) -> Any:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.settings.max_bytes is not None:
            enforce_retention(self.folder, self.settings.max_bytes, self._keep)
        with self._files_lock:
            part = len(self._files) + 1
        now = time.time()
        name = f"{_file_name_part(self.stream)}_{time.strftime(STAMP, time.gmtime(now))}_{self.id}_{part:03d}.mp4"
        path = self.folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
        self._lock_fd = fd
        with self._files_lock:
            self._files.append(RecordingFile(path, self.stream, self.id, part, float(int(now))))
        log.info("[%s] recording %s: writing %s", self.stream, self.id, path)
        self._call(self._on_file_opened, path)
        return str(path)

    def close_target(self, target: Any, clean: bool) -> None:
        with self._files_lock:
            file = self._files[-1]
        with contextlib.suppress(OSError):
            file.bytes = file.path.stat().st_size
        file.duration_s = self.timeline.duration_s if self.timeline is not None else 0.0
        file.complete = True
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info(
            "[%s] recording %s: %s closed (%d bytes, %.1f s)",
            self.stream,
            self.id,
            file.path.name,
            file.bytes,
            file.duration_s,
        )
        if self.settings.max_bytes is not None:
            enforce_retention(self.folder, self.settings.max_bytes, self._keep)
        self._call(self._on_file_closed, file.path)

    def _call(self, hook: Callable[[Path], None] | None, path: Path) -> None:
        if hook is None:
            return
        try:
            hook(path)
        except Exception:
            log.exception("[%s] recording %s: the file hook failed for %s", self.stream, self.id, path.name)
