"""`ProcessedVideoTrack`: the aiortc track a viewer's sender pulls processed frames from."""

from __future__ import annotations

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livegen.media.output import StreamOutput


class ProcessedVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, output: StreamOutput):
        super().__init__()
        self._output = output
        self._subscription = output.subscribe()

    @property
    def dropped(self) -> int:
        return self._subscription.dropped

    async def recv(self) -> av.VideoFrame:
        frame = await self._subscription.next()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        self._output.unsubscribe(self._subscription)
        super().stop()
