"""`MuxingOutput`: what an FLV or MP4 output does with the stream's packets, whatever the target.

The video is muxed as the stream's encoder made it (H.264, Annex B with SPS/PPS in-band: the FLV
and MP4 muxers take it without extradata) and the audio as the stream's AAC encoder made it (the
AAC stream is added from `AacEncoder.template`, which carries the AudioSpecificConfig). Nothing
is re-encoded.

A (re)start first sets up what needs no video (`connect`: an RTMP session), then clears the
queue and asks the stream's encoder for a keyframe; so attempts against a server that is down
cost the stream no keyframes. Then one container after another: a video keyframe opens the
target (`open_target`: that session, a file) and the container is muxed into until the output
stops, an error ends it, or a keyframe must start a new one (the picture size changed, a
recording rotates). Audio and video go on one timeline that starts at 0 at that keyframe: each
kind starts where its first packet's `at` falls relative to the keyframe's, advances by its own
pts and is pulled, gently, to where the median of its recent `at`s says (see `Timeline`), as
the WHEP path keeps them aligned.

States (see `relay.base`): `connecting` until the first packet is written, then `live`; an error
the subclass calls transient → `retrying` with `flow.backoff.Backoff`, for as long as the
output runs; a permanent one → `failed` with `last_error`. Producers only ever touch `offer`,
which never blocks.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
from av.container import OutputContainer
from av.stream import Stream

from livegen.flow.backoff import Backoff
from livegen.flow.stage import ThreadStage
from livegen.media.packet import MediaPacket
from livegen.relay.base import (
    OutputState,
    OutputStatus,
    PacketQueue,
    PermanentOutputError,
)

log = logging.getLogger(__name__)

VIDEO_CLOCK = fractions.Fraction(1, 90_000)
AUDIO_CLOCK = fractions.Fraction(1, 48_000)
MIN_STEP_S, MAX_STEP_S = 0.001, 1.0
"""A pts step outside these is a discontinuity, bridged by the step of `at`."""
DRIFT_WINDOW = 30
"""How many of a kind's latest packets its offset from `at` is the median of (video: a second)."""
DRIFT_SLACK_S = 0.005
"""How far that median offset may be from where the kind is placed before it is pulled back."""
STABLE_S = 10.0
"""Live this long, an output's next error starts its backoff from the beginning again."""


def parameter_sets(data: bytes) -> bytes:
    """The SPS NAL units of an Annex B access unit (what says the picture's format)."""
    found = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        end = data.find(b"\x00\x00\x01", start + 3)
        nal = data[start + 3 : end if end >= 0 else len(data)].rstrip(b"\x00")
        if nal and nal[0] & 0x1F == 7:
            found.append(nal)
        start = end
    return b"".join(found)


def picture_size(packet: av.Packet) -> tuple[int, int]:
    """Width and height of an H.264 keyframe, by decoding it (once per container)."""
    decoder = av.CodecContext.create("h264", "r")
    frames = decoder.decode(av.Packet(bytes(packet))) + decoder.decode(None)
    if not frames:
        raise ValueError("the first video keyframe did not decode")
    return frames[0].width, frames[0].height


@dataclass
class _Track:
    pts: int
    placed: int
    step: int = 0
    line: int = 0
    """Where the kind's own steps alone would have put its last packet."""
    shift: int = 0
    """What pulling the kind back to `at` has added to `line` so far."""
    offsets: deque[int] = field(default_factory=lambda: deque([0], maxlen=DRIFT_WINDOW))
    """`at` minus `line` of its latest packets, in its time base."""


class Timeline:
    """Places packets of both kinds on one timeline that starts at 0 at the container's first
    keyframe, in each kind's own time base.

    A kind's first packet goes where its `at` falls; after that a packet goes one pts step after
    the kind's previous one, so the encoder's timing survives the jitter in `at`. A step that
    makes no sense (backwards, under a millisecond as when an encoder forces +1 tick, over a
    second: a new publisher's clock, a slate restarting its own) is replaced by the step of `at`.
    Where `at` says a kind belongs is the median over its last `DRIFT_WINDOW` packets, not any
    one packet's: video's `at` is when the encoder delivered it, and the first keyframe of a
    container comes late (an encoder starting, a keyframe's longer encode), as do frames at a
    busy moment, while audio is held back by the video's median delay. A kind whose median is
    more than `DRIFT_SLACK_S` from where it is placed (that late first keyframe, a publisher's
    clock a little fast or slow for hours) has its steps stretched or shrunk by up to a tenth
    until it is back, so audio and video come together without a jump.
    """

    def __init__(self, origin_at: float):
        self.origin_at = origin_at
        self._tracks: dict[str, _Track] = {}
        self._end_s = 0.0

    def place(self, item: MediaPacket, time_base: fractions.Fraction) -> int | None:
        """The packet's pts on the timeline, or None when it falls before 0 (audio from just
        before the keyframe)."""
        pts = item.packet.pts
        if pts is None:
            return None
        by_clock = round((item.at - self.origin_at) / time_base)
        track = self._tracks.get(item.kind)
        if track is None:
            track = self._tracks[item.kind] = _Track(pts, by_clock, line=by_clock)
        else:
            step = pts - track.pts
            if not MIN_STEP_S <= float(step * time_base) <= MAX_STEP_S:
                step = by_clock - track.placed  # the line jumps with `at`: no offset from it
                if step <= 0:
                    step = track.step or 1
            track.pts, track.step = pts, step
            track.line += step
            track.offsets.append(by_clock - track.line)
            error = sorted(track.offsets)[len(track.offsets) // 2] - track.shift
            slack = round(DRIFT_SLACK_S / time_base)
            if abs(error) > slack:
                nudge = min(abs(error) - slack, step // 10)
                track.shift += nudge if error > 0 else -nudge
            track.placed = max(track.placed + 1, track.line + track.shift)
        placed = track.placed
        if placed < 0:
            return None
        self._end_s = max(self._end_s, float((placed + (item.packet.duration or 0)) * time_base))
        return placed

    @property
    def duration_s(self) -> float:
        """Up to the end of the last packet placed (its start where it has no duration)."""
        return self._end_s


class MuxingOutput(ThreadStage):
    """Base of `RtmpOutput` and `RecordingOutput`; see the module docstring."""

    kind = "mux"
    format_name = ""
    wants = frozenset({"video", "aac"})
    poll_s = 0.1

    def __init__(
        self,
        stream: str,
        shown_url: str,
        audio_template: Stream,
        request_keyframe: Callable[[], None],
        *,
        name: str | None = None,
        queue_packets: int = 600,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(f"livegen-{self.kind}-{stream}")
        self.stream = stream
        self.status = OutputStatus(kind=self.kind, url=shown_url, name=name or stream)
        self._audio_template = audio_template
        self._request_keyframe = request_keyframe
        self._queue = PacketQueue(queue_packets)
        self._drain_left: int | None = None
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._done = False
        self._exited = threading.Event()
        self._live_since: float | None = None
        self.ever_live = False
        self.timeline: Timeline | None = None
        """The current container's timeline (for its duration)."""

    # ---- producers and the owner ---------------------------------------------------------
    def offer(self, item: MediaPacket) -> None:
        if self._done:
            return
        self._queue.put(item)
        self.status.packets_dropped = self._queue.dropped

    def stop(self, timeout: float = 5.0) -> bool:
        """Finish the current container cleanly (an MP4's last fragment, an RTMP goodbye) when
        that is quick; otherwise abort the I/O it waits on."""
        deadline = time.monotonic() + timeout
        self.halt()
        if self.running and not self._exited.wait(min(timeout / 2, 2.0)):
            self.abort_io()
        stopped = super().stop(max(0.1, deadline - time.monotonic()))
        self._done = True
        if self.status.state != OutputState.FAILED:
            self.status.set(OutputState.STOPPED)
        return stopped

    # ---- what a subclass provides ---------------------------------------------------------
    def connect(self) -> None:
        """At each (re)start, before the keyframe is asked for: what can be set up (and fail)
        without one, so a failing server costs the stream no keyframes (an RTMP session)."""

    def open_target(self) -> Any:
        """At a keyframe: what the container is written to (a path, a file object); may raise."""
        raise NotImplementedError

    def container_options(self) -> dict[str, str]:
        return {}

    def close_target(self, target: Any, clean: bool) -> None:
        """The container is closed (`clean`: its trailer written)."""

    def split_due(self, elapsed_s: float) -> bool:
        """At a keyframe `elapsed_s` after the container's first: end this container and start a
        new one with it (a recording rotates)."""
        return False

    def is_permanent(self, exc: BaseException) -> bool:
        return isinstance(exc, PermanentOutputError)

    def abort_io(self) -> None:
        """From the owner's thread: end I/O the stage is blocked in (it is stopping)."""

    # ---- the thread -----------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.stopping:
                try:
                    self._run_once()
                except Exception as exc:
                    if self.stopping:
                        break  # I/O aborted by stop(): not a failure
                    if not self._on_error(exc):
                        break
        finally:
            self._done = True
            self._queue.clear()
            if self.status.state != OutputState.FAILED:
                self.status.set(OutputState.STOPPED)
            self._exited.set()

    def _on_error(self, exc: Exception) -> bool:
        """Record `exc`; True when the output should try again (after its backoff)."""
        message = str(exc) or type(exc).__name__
        if self.is_permanent(exc):
            self.status.set(OutputState.FAILED, message)
            log.error("[%s] %s output %s failed: %s", self.stream, self.kind, self.status.url, message)
            return False
        now = self._clock()
        if self._live_since is not None and now - self._live_since >= STABLE_S:
            self._backoff.reset()
        self._live_since = None
        delay = self._backoff.next_delay()
        if self.status.state != OutputState.RETRYING:
            log.warning("[%s] %s output %s: %s; retrying", self.stream, self.kind, self.status.url, message)
        else:
            log.debug(
                "[%s] %s output %s: %s; next try in %.1f s", self.stream, self.kind, self.status.url, message, delay
            )
        self.status.set(OutputState.RETRYING, message)
        self.sleep(delay)
        return True

    def _next(self) -> MediaPacket | None:
        """The next packet, waiting as long as it takes; once stopping, what is still queued
        (what was offered before the stop is written too, when that is quick: `stop` aborts
        the I/O after a while), then None."""
        while not self.stopping:
            item = self._queue.get(self.poll_s)
            if item is not None:
                return item
        if self._drain_left is None:  # what was queued when the stop came; not what comes after
            self._drain_left = len(self._queue)
        if self._drain_left <= 0:
            return None
        self._drain_left -= 1
        return self._queue.get(0.0)

    def _run_once(self) -> None:
        self.connect()
        self._queue.clear()
        self._request_keyframe()
        first = self._next()  # the queue hands a video keyframe first after a clear
        while first is not None:
            first = self._write_container(first)

    def _write_container(self, first: MediaPacket) -> MediaPacket | None:
        """Mux from `first` (a keyframe) until stopped (None) or a split is due (the keyframe
        that starts the next container)."""
        sps = parameter_sets(bytes(first.packet))
        width, height = picture_size(first.packet)
        self.timeline = None
        target = self.open_target()
        container: OutputContainer | None = None
        clean = False
        try:
            container = av.open(target, "w", format=self.format_name, container_options=self.container_options())
            video = container.add_mux_stream("h264", rate=30, width=width, height=height)
            audio = container.add_stream_from_template(self._audio_template)
            timeline = self.timeline = Timeline(first.at)
            item: MediaPacket | None = first
            while item is not None:
                self._mux(container, video if item.kind == "video" else audio, item, timeline)
                item = self._next()
                if item is not None and item.kind == "video" and item.packet.is_keyframe:
                    changed = parameter_sets(bytes(item.packet)) not in (sps, b"")
                    if changed or self.split_due(item.at - timeline.origin_at):
                        break
            container.close()
            clean = True
            return item
        finally:
            if container is not None and not clean:
                try:
                    container.close()
                except Exception:  # the error that got us here is the one worth reporting
                    pass
            self.close_target(target, clean)

    def _mux(self, container: OutputContainer, stream: Stream, item: MediaPacket, timeline: Timeline) -> None:
        time_base = item.packet.time_base or (VIDEO_CLOCK if item.kind == "video" else AUDIO_CLOCK)
        pts = timeline.place(item, time_base)
        if pts is None:
            return
        # A copy: the same packet goes to every output, each on its own thread, and muxing
        # rebases a packet's timestamps in place.
        packet = av.Packet(bytes(item.packet))
        packet.pts = packet.dts = pts
        packet.time_base = time_base
        packet.is_keyframe = item.kind != "video" or item.packet.is_keyframe
        packet.stream = stream
        container.mux(packet)
        self.status.sent.add(packet.size)
        if self.status.state != OutputState.LIVE:
            self._live_since = self._clock()
            self.ever_live = True
            self.status.set(OutputState.LIVE)
            log.info("[%s] %s output %s is live", self.stream, self.kind, self.status.url)
