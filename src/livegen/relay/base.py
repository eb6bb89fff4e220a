"""What every output shares: its state, its counters, its bounded packet queue, and how it fails.

States: `connecting` → `live` ⇄ `retrying` → … and finally `stopped` (asked to) or `failed` (an
error retrying cannot fix: a bad URL, a rejected key or application). Transient errors (a
refused or dropped connection, a time-out) are retried with `flow.backoff.Backoff` (1 s base,
30 s cap, full jitter) for as long as the stream lives.

Media reaches an output from other threads (the stream's encoder thread, the AAC encoder) through
`PacketQueue`: thread-safe, bounded; when full, the backlog goes and the output resumes at the
next video keyframe, so a stuck output never holds memory or slows its producers.
"""

from __future__ import annotations

import enum
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from livegen.media.packet import MediaPacket
from livegen.observability.metrics import ByteRate


class OutputState(str, enum.Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    RETRYING = "retrying"
    FAILED = "failed"
    STOPPED = "stopped"


class PermanentOutputError(Exception):
    """Retrying cannot fix this (bad URL, rejected stream key or application, unsupported)."""


class TransientOutputError(Exception):
    """Worth retrying (connection refused or dropped, time-out)."""


def redact_url(url: str) -> str:
    """`url` with what may be secret hidden: the stream key (the RTMP path after the application),
    a password, a query string. What operators see and logs print."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    path = parts.path
    if parts.scheme in ("rtmp", "rtmps"):
        segments = path.split("/")
        if len(segments) > 2:  # /app/key → /app/***
            path = "/".join(segments[:2] + ["***"])
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, path, query, ""))


@dataclass
class OutputStatus:
    """An output's public face: what the API, `/ops` and the metrics show. Never a secret."""

    kind: str
    """"rtmp", "whip" or "recording"."""
    url: str
    """Redacted (see `redact_url`)."""
    name: str
    id: str = field(default_factory=lambda: secrets.token_urlsafe(6))
    state: OutputState = OutputState.CONNECTING
    reconnects: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)
    sent: ByteRate = field(default_factory=ByteRate)
    packets_dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, state: OutputState, error: str | None = None) -> None:
        with self._lock:
            if state == OutputState.RETRYING and self.state != OutputState.RETRYING:
                self.reconnects += 1
            self.state = state
            if error is not None:
                self.last_error = error

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "id": self.id,
                "name": self.name,
                "kind": self.kind,
                "url": self.url,
                "state": self.state.value,
                "bytes": self.sent.total,
                "bitrate_bps": round(self.sent.bits_per_second()),
                "reconnects": self.reconnects,
                "last_error": self.last_error,
                "packets_dropped": self.packets_dropped,
                "started_at": self.started_at,
            }


class PacketQueue:
    """Thread-safe bounded queue of `MediaPacket`s for one output. When full, everything queued
    is dropped (counted) and video resumes at the next keyframe; audio waits for video to
    resume so the two stay aligned."""

    def __init__(self, capacity: int = 300):
        self._items: deque[MediaPacket] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self.waiting_for_keyframe = True
        self.dropped = 0
        self.resyncs = 0

    def put(self, item: MediaPacket) -> None:
        with self._cond:
            if len(self._items) >= self._capacity:
                self.dropped += len(self._items)
                self._items.clear()
                self.waiting_for_keyframe = True
                self.resyncs += 1
            if self.waiting_for_keyframe:
                if item.kind != "video" or not item.packet.is_keyframe:
                    self.dropped += 1
                    return
                self.waiting_for_keyframe = False
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float) -> MediaPacket | None:
        """The oldest packet, waiting up to `timeout` seconds; None when there was none."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear(self) -> None:
        """Forget the backlog (a reconnect): the next packet taken is a video keyframe."""
        with self._cond:
            self.dropped += len(self._items)
            self._items.clear()
            self.waiting_for_keyframe = True

    def __len__(self) -> int:
        return len(self._items)


class Output(Protocol):
    """What the stream hub holds for each output and recording.

    Built with the stream's name, its URL or folder, the settings it needs and
    `request_keyframe()` (thread-safe: asks the stream's encoder for a keyframe, e.g. on every
    (re)connect). `offer` is called from the producers' threads for every packet of the kinds in
    `wants`, and never blocks. `start` begins connecting in the background; `stop` ends it
    (blocking, up to `timeout`: the hub calls it off the event loop) and leaves it `stopped`.
    """

    status: OutputStatus
    wants: frozenset[str]
    """Which media it takes: {"video", "aac"} (FLV, MP4) or {"video", "opus"} (WHIP)."""

    def offer(self, item: MediaPacket) -> None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> bool: ...
