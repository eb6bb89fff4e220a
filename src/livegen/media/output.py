"""`StreamOutput`: where a stream's processed frames go, and how they reach every viewer.

`encode_once` (default): the stream's `StreamEncoder` thread encodes each frame once per codec
in use, and every viewer of that codec gets the same packets. Each viewer has a bounded packet
queue: one that falls too far behind drops its queue and resumes at the next keyframe (asked
for, rate-limited), so a slow viewer never delays the others or the encoder.

`per_viewer`: every viewer gets the decoded frames (one-frame mailbox, latest wins) and aiortc
encodes for it. Costs an encoder per viewer; kept to measure what encode-once saves.

`publish` may be called from any thread (the device worker calls it); everything else runs on
the asyncio loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import av

from livegen.config import OutputSettings
from livegen.media.encoder import StreamEncoder


class OutputSubscription:
    """A per-viewer one-frame mailbox (per_viewer mode)."""

    def __init__(self) -> None:
        self._ready = asyncio.Event()
        self._frame: av.VideoFrame | None = None
        self._closed = False
        self.dropped = 0

    def offer(self, frame: av.VideoFrame) -> None:
        if self._frame is not None:
            self.dropped += 1
        self._frame = frame
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def next(self) -> av.VideoFrame | None:
        """The newest frame not yet taken; None once closed."""
        while not self._closed:
            await self._ready.wait()
            self._ready.clear()
            frame, self._frame = self._frame, None
            if frame is not None and not self._closed:
                return frame
        return None


class PacketSubscription:
    """A viewer's bounded queue of encoded packets of one codec (encode_once mode)."""

    def __init__(self, codec: str, capacity: int, want_keyframe: Callable[[str], None]):
        self.codec = codec
        self._capacity = capacity
        self._want_keyframe = want_keyframe
        self._queue: deque[av.Packet] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self.waiting_for_keyframe = True
        self.dropped = 0
        self.resyncs = 0

    def offer(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if len(self._queue) >= self._capacity:
                self.dropped += len(self._queue)
                self._queue.clear()
                self.waiting_for_keyframe = True
                self.resyncs += 1
                self._want_keyframe(self.codec)
            if self.waiting_for_keyframe:
                if not packet.is_keyframe:
                    self.dropped += 1
                    continue
                self.waiting_for_keyframe = False
            self._queue.append(packet)
        if self._queue:
            self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def next(self) -> av.Packet | None:
        """The next packet in order; None once closed."""
        while not self._closed:
            if self._queue:
                return self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()
        return None


class StreamOutput:
    def __init__(self, name: str, settings: OutputSettings, loop: asyncio.AbstractEventLoop):
        self.name = name
        self.settings = settings
        self.mode = settings.mode
        self._loop = loop
        self._frame_subscribers: set[OutputSubscription] = set()
        self._packet_subscribers: set[PacketSubscription] = set()
        self._latest: av.VideoFrame | None = None
        self.encoder = StreamEncoder(name, settings, self._deliver_from_encoder)
        self.frames_published = 0
        self.closed = False

    # ---- any thread ---------------------------------------------------------------------
    def publish(self, frame: av.VideoFrame) -> None:
        if self.closed:
            return
        self.frames_published += 1
        if self.mode == "encode_once":
            if self._packet_subscribers:
                self.encoder.submit(frame)
        else:
            self._loop.call_soon_threadsafe(self._offer_frame, frame)

    def _deliver_from_encoder(self, codec: str, packets: list[av.Packet]) -> None:
        self._loop.call_soon_threadsafe(self._offer_packets, codec, packets)

    # ---- loop -----------------------------------------------------------------------------
    def _offer_frame(self, frame: av.VideoFrame) -> None:
        if self.closed:
            return
        self._latest = frame
        for subscriber in self._frame_subscribers:
            subscriber.offer(frame)

    def _offer_packets(self, codec: str, packets: list[av.Packet]) -> None:
        for subscriber in self._packet_subscribers:
            if subscriber.codec == codec:
                subscriber.offer(packets)

    def subscribe_frames(self) -> OutputSubscription:
        subscription = OutputSubscription()
        if self.closed:
            subscription.close()
            return subscription
        self._frame_subscribers.add(subscription)
        if self._latest is not None:
            subscription.offer(self._latest)  # a new viewer starts at once
        return subscription

    def subscribe_packets(self, codec: str) -> PacketSubscription:
        subscription = PacketSubscription(codec, self.settings.viewer_queue_packets, self.request_keyframe)
        if self.closed:
            subscription.close()
            return subscription
        self._packet_subscribers.add(subscription)
        self.encoder.set_codecs(s.codec for s in self._packet_subscribers)
        self.encoder.request_keyframe(codec)
        self.encoder.start()
        return subscription

    def request_keyframe(self, codec: str) -> None:
        self.encoder.request_keyframe(codec)

    def unsubscribe(self, subscription: OutputSubscription | PacketSubscription) -> None:
        subscription.close()
        if isinstance(subscription, PacketSubscription):
            if subscription in self._packet_subscribers:
                self._packet_subscribers.discard(subscription)
                self.encoder.set_codecs(s.codec for s in self._packet_subscribers)
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
            "frames_encoded": encoder.frames_encoded,
            "encoder_frames_dropped": encoder.frames_dropped,
            "keyframes_forced": encoder.keyframes_forced,
            "encode_ms": encoder.encode_ms.summary(),
            "viewer_packets_dropped": sum(s.dropped for s in self._packet_subscribers),
            "viewer_resyncs": sum(s.resyncs for s in self._packet_subscribers),
            "viewer_frames_dropped": sum(s.dropped for s in self._frame_subscribers),
        }
