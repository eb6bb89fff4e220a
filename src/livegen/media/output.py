"""`StreamOutput`: hands each processed frame of a stream to every viewer, latest frame wins.

Lives on the asyncio loop: the worker publishes through `loop.call_soon_threadsafe`. Every viewer
has its own one-frame mailbox, so a slow viewer misses frames (counted) and never holds up the
others or the engine.
"""

from __future__ import annotations

import asyncio

import av


class OutputSubscription:
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
        """The newest frame not yet taken; None once the output is closed."""
        while not self._closed:
            await self._ready.wait()
            self._ready.clear()
            frame, self._frame = self._frame, None
            if frame is not None and not self._closed:
                return frame
        return None


class StreamOutput:
    def __init__(self) -> None:
        self._subscribers: set[OutputSubscription] = set()
        self._latest: av.VideoFrame | None = None
        self.frames_published = 0
        self.closed = False

    def publish(self, frame: av.VideoFrame) -> None:
        if self.closed:
            return
        self._latest = frame
        self.frames_published += 1
        for subscriber in self._subscribers:
            subscriber.offer(frame)

    def subscribe(self) -> OutputSubscription:
        subscription = OutputSubscription()
        if self.closed:
            subscription.close()
            return subscription
        self._subscribers.add(subscription)
        if self._latest is not None:
            subscription.offer(self._latest)  # a new viewer starts at once
        return subscription

    def unsubscribe(self, subscription: OutputSubscription) -> None:
        self._subscribers.discard(subscription)
        subscription.close()

    def close(self) -> None:
        self.closed = True
        self._latest = None
        for subscriber in self._subscribers:
            subscriber.close()
        self._subscribers.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
