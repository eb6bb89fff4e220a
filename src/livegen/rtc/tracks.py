"""The aiortc tracks a viewer's sender pulls from, and the `ViewerFeed` they pull through.

`EncodedVideoTrack` hands out packets the stream encoded once (aiortc's sender packetizes them
without encoding); its codec is bound after negotiation. `ProcessedVideoTrack` hands out frames
for the viewer's own encoder, which its sender runs (per_viewer mode). `RelayedAudioTrack`
hands out the publisher's Opus packets as they were sent. Each reads one bounded `Mailbox` that
the feed fills.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livegen.flow.mailbox import Mailbox
from livegen.rtc.aiortc_adapter import FrameEncoder


class ViewerFeed(Protocol):
    """What a viewer's session reads from its stream (the hub's `Stream`)."""

    @property
    def output_mode(self) -> str:
        """"encode_once" (shared packets) or "per_viewer" (frames each viewer encodes)."""

    @property
    def video_codecs(self) -> Sequence[str]:
        """The codecs viewers are offered, in order of preference."""

    def subscribe_packets(self, codec: str) -> Mailbox[av.Packet]: ...

    def subscribe_frames(self) -> Mailbox[av.VideoFrame]: ...

    def frame_encoder(self, codec: str) -> FrameEncoder:
        """A new encoder for one viewer (per_viewer mode), configured as encode_once's."""

    def subscribe_audio(self) -> Mailbox[av.Packet]: ...

    def unsubscribe(self, mailbox: Mailbox[Any]) -> None: ...

    def request_keyframe(self, codec: str) -> None: ...


class _MailboxTrack(MediaStreamTrack):
    """A track that hands out what its mailbox receives, and ends when the mailbox closes."""

    def __init__(self, feed: ViewerFeed, mailbox: Mailbox[Any] | None):
        super().__init__()
        self._feed = feed
        self._mailbox = mailbox

    async def _next(self, mailbox: Mailbox[Any]) -> Any:
        item = await mailbox.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        return item

    async def recv(self) -> Any:
        return await self._next(self._mailbox)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self._mailbox is not None:
            self._feed.unsubscribe(self._mailbox)
        super().stop()


class EncodedVideoTrack(_MailboxTrack):
    kind = "video"

    def __init__(self, feed: ViewerFeed):
        super().__init__(feed, None)
        self._bound: asyncio.Future[Mailbox[av.Packet]] = asyncio.get_running_loop().create_future()

    def bind(self, codec: str) -> None:
        """Start receiving `codec` packets (the codec the viewer's answer settled on)."""
        if self._mailbox is None and self.readyState == "live":
            self._mailbox = self._feed.subscribe_packets(codec)
            self._bound.set_result(self._mailbox)

    async def recv(self) -> av.Packet:
        return await self._next(await self._bound)

    def stop(self) -> None:
        if self._mailbox is None and not self._bound.done():
            self._bound.cancel()
        super().stop()


class ProcessedVideoTrack(_MailboxTrack):
    kind = "video"

    def __init__(self, feed: ViewerFeed):
        super().__init__(feed, feed.subscribe_frames())

    def bind(self, codec: str) -> None:
        """Nothing to do: the viewer's sender encodes for it (see `ViewerSession.answered`)."""


class RelayedAudioTrack(_MailboxTrack):
    kind = "audio"

    def __init__(self, feed: ViewerFeed):
        super().__init__(feed, feed.subscribe_audio())
