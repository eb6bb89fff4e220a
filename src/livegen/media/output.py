"""`StreamOutput`: where a stream's processed frames go, and how they reach every viewer.

`encode_once` (default): the stream's `StreamEncoder` thread encodes each frame once per codec
in use, and every viewer of that codec gets the same packets. Each viewer has a bounded packet
mailbox: one that falls too far behind drops its queue and resumes at the next keyframe (asked
for, rate-limited), so a slow viewer never delays the others or the encoder.

`per_viewer`: every viewer gets the decoded frames (a `Mailbox` of one, latest wins) and its
own `ViewerEncoder` (`viewer_encoder`), with the settings encode-once uses, which its sender
runs. Costs an encoder per viewer; kept to measure what encode-once saves, like for like.

Taps (`add_tap`) get the same H.264 packets on the encoder's thread: the stream's outputs to
platforms and its recordings, which must hand them on without blocking. While any tap runs, a
keyframe comes at least every `max_keyframe_interval_s` (what platforms require).

`publish` may be called from any thread (the device worker calls it); everything else runs on
the asyncio loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

import av

from livegen.config import OutputSettings
from livegen.flow.mailbox import Mailbox
from livegen.media.encoder import StreamEncoder, ViewerEncoder

TAP_CODEC = "H264"
"""What outputs and recordings take: FLV, MP4 and WHIP all carry the H.264 encoded once."""


class PacketSubscription(Mailbox[av.Packet]):
    """A viewer's bounded mailbox of encoded packets of one codec (encode_once mode). When it
    is full, the whole backlog goes and the viewer resumes at the next keyframe (asked for):
    a decoder cannot skip single packets."""

    def __init__(self, codec: str, capacity: int, want_keyframe: Callable[[str], None]):
        super().__init__(capacity)
        self.codec = codec
        self._want_keyframe = want_keyframe
        self.waiting_for_keyframe = True
        self.resyncs = 0

    def offer(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if self.full:
                self.clear()
                self.waiting_for_keyframe = True
                self.resyncs += 1
                self._want_keyframe(self.codec)
            if self.waiting_for_keyframe:
                if not packet.is_keyframe:
                    self.dropped += 1
                    continue
                self.waiting_for_keyframe = False
            self.put(packet)


class StreamOutput:
    def __init__(self, name: str, settings: OutputSettings, loop: asyncio.AbstractEventLoop):
        self.name = name
        self.settings = settings
        self.mode = settings.mode
        self._loop = loop
        self._frame_subscribers: set[Mailbox[av.VideoFrame]] = set()
        self._packet_subscribers: set[PacketSubscription] = set()
        self._latest: av.VideoFrame | None = None
        self._taps: dict[int, Callable[[list[av.Packet]], None]] = {}
        """Thread-side listeners of the H.264 packets (outputs, recordings): called on the
        encoder's thread, so each must only hand the packets on without blocking."""
        self._next_tap = 0
        self.encoder = StreamEncoder(name, settings, self._deliver_from_encoder)
        self._viewer_encoders: weakref.WeakSet[ViewerEncoder] = weakref.WeakSet()
        """per_viewer mode: each viewer's own encoder, while its sender holds it."""
        self.frames_published = 0
        self.last_frame: av.VideoFrame | None = None
        """The newest processed frame (what a slate dims while the publisher is away)."""
        self.closed = False

    # ---- any thread ---------------------------------------------------------------------
    def publish(self, frame: av.VideoFrame) -> None:
        if self.closed:
            return
        self.frames_published += 1
        self.last_frame = frame
        if self._packet_subscribers or self._taps:
            self.encoder.submit(frame)
        if self.mode == "per_viewer":
            self._loop.call_soon_threadsafe(self._offer_frame, frame)

    def _deliver_from_encoder(self, codec: str, packets: list[av.Packet]) -> None:
        if codec == TAP_CODEC:
            for tap in list(self._taps.values()):
                tap(packets)
        if self._packet_subscribers:
            self._loop.call_soon_threadsafe(self._offer_packets, codec, packets)

    def add_tap(self, tap: Callable[[list[av.Packet]], None], max_keyframe_interval_s: float | None = None) -> int:
        """Hand every H.264 packet list to `tap` on the encoder's thread (it must not block); the
        encoder runs while any tap or viewer needs it. Returns the tap's handle."""
        self._next_tap += 1
        self._taps[self._next_tap] = tap
        self.encoder.max_keyframe_interval_s = max_keyframe_interval_s
        self._update_codecs()
        self.encoder.request_keyframe(TAP_CODEC)
        self.encoder.start()
        return self._next_tap

    def remove_tap(self, handle: int) -> None:
        self._taps.pop(handle, None)
        if not self._taps:
            self.encoder.max_keyframe_interval_s = None
        self._update_codecs()

    def _update_codecs(self) -> None:
        wanted = {s.codec for s in self._packet_subscribers}
        if self._taps:
            wanted.add(TAP_CODEC)
        self.encoder.set_codecs(wanted)

    # ---- loop -----------------------------------------------------------------------------
    def _offer_frame(self, frame: av.VideoFrame) -> None:
        if self.closed:
            return
        self._latest = frame
        for subscriber in self._frame_subscribers:
            subscriber.put(frame)

    def _offer_packets(self, codec: str, packets: list[av.Packet]) -> None:
        for subscriber in self._packet_subscribers:
            if subscriber.codec == codec:
                subscriber.offer(packets)

    def subscribe_frames(self) -> Mailbox[av.VideoFrame]:
        """A mailbox of one frame (latest wins) for a viewer that aiortc encodes for."""
        subscription: Mailbox[av.VideoFrame] = Mailbox(1)
        if self.closed:
            subscription.close()
            return subscription
        self._frame_subscribers.add(subscription)
        if self._latest is not None:
            subscription.put(self._latest)  # a new viewer starts at once
        return subscription

    def subscribe_packets(self, codec: str) -> PacketSubscription:
        subscription = PacketSubscription(codec, self.settings.viewer_queue_packets, self.request_keyframe)
        if self.closed:
            subscription.close()
            return subscription
        self._packet_subscribers.add(subscription)
        self._update_codecs()
        self.encoder.request_keyframe(codec)
        self.encoder.start()
        return subscription

    def request_keyframe(self, codec: str) -> None:
        self.encoder.request_keyframe(codec)

    def viewer_encoder(self, codec: str) -> ViewerEncoder:
        """A viewer's own encoder (per_viewer mode), with the settings encode_once uses."""
        encoder = ViewerEncoder(codec, self.settings)
        self._viewer_encoders.add(encoder)
        return encoder

    def unsubscribe(self, subscription: Mailbox[Any]) -> None:
        subscription.close()
        if isinstance(subscription, PacketSubscription):
            if subscription in self._packet_subscribers:
                self._packet_subscribers.discard(subscription)
                self._update_codecs()
        else:
            self._frame_subscribers.discard(subscription)

    async def close(self) -> None:
        self.closed = True
        self._latest = None
        for subscriber in (*self._frame_subscribers, *self._packet_subscribers):
            subscriber.close()
        self._frame_subscribers.clear()
        self._packet_subscribers.clear()
        if self.encoder.running:
            await self._loop.run_in_executor(None, self.encoder.stop)

    @property
    def subscribers(self) -> int:
        return len(self._frame_subscribers) + len(self._packet_subscribers)

    def stats(self) -> dict[str, Any]:
        encoder = self.encoder
        return {
            "mode": self.mode,
            "encoders": encoder.implementations(),
            "encoder_settings": self._encoder_settings(),
            "viewer_encoders": len(self._viewer_encoders),
            "frames_encoded": encoder.frames_encoded,
            "encoder_frames_dropped": encoder.frames_dropped,
            "encode_errors": encoder.encode_errors.total,
            "keyframes_forced": encoder.keyframes_forced,
            "encode_ms": encoder.encode_ms.summary(),
            "viewer_packets_dropped": sum(s.dropped for s in self._packet_subscribers),
            "viewer_resyncs": sum(s.resyncs for s in self._packet_subscribers),
            "viewer_frames_dropped": sum(s.dropped for s in self._frame_subscribers),
        }

    def _encoder_settings(self) -> dict[str, dict[str, Any]]:
        """What the open encoders run, by codec: the shared ones, else a viewer's own."""
        settings = self.encoder.settings_in_use()
        for encoder in list(self._viewer_encoders):
            if encoder.codec not in settings and (described := encoder.describe()):
                settings[encoder.codec] = described
        return settings
