"""The aiortc tracks a viewer's sender pulls from.

`EncodedVideoTrack` hands out packets the stream encoded once (aiortc's sender packetizes them
without encoding); its codec is bound after negotiation. `ProcessedVideoTrack` hands out frames
for aiortc to encode per viewer (per_viewer mode). `RelayedAudioTrack` hands out the publisher's
Opus packets as they were sent.
"""

from __future__ import annotations

import asyncio

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livegen.media.audio import AudioRelay
from livegen.media.output import OutputSubscription, PacketSubscription, StreamOutput


class EncodedVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, output: StreamOutput):
        super().__init__()
        self._output = output
        self._subscription: PacketSubscription | None = None
        self._bound = asyncio.get_running_loop().create_future()

    def bind(self, codec: str) -> None:
        """Start receiving `codec` packets (the codec the viewer's answer settled on)."""
        if self._subscription is None and self.readyState == "live":
            self._subscription = self._output.subscribe_packets(codec)
            self._bound.set_result(self._subscription)

    async def recv(self) -> av.Packet:
        subscription = await self._bound
        packet = await subscription.next()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        if self._subscription is not None:
            self._output.unsubscribe(self._subscription)
        elif not self._bound.done():
            self._bound.cancel()
        super().stop()


class ProcessedVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, output: StreamOutput):
        super().__init__()
        self._output = output
        self._subscription: OutputSubscription = output.subscribe_frames()

    def bind(self, codec: str) -> None:
        """Nothing to do: aiortc encodes for this viewer with the codec it negotiated."""

    async def recv(self) -> av.VideoFrame:
        frame = await self._subscription.next()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        self._output.unsubscribe(self._subscription)
        super().stop()


class RelayedAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, relay: AudioRelay):
        super().__init__()
        self._relay = relay
        self._subscription = relay.subscribe()

    async def recv(self) -> av.Packet:
        packet = await self._subscription.next()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        self._relay.unsubscribe(self._subscription)
        super().stop()
