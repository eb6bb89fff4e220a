"""`IngestSession`: a publisher's recvonly peer (WHIP).

Its decoded video goes to a `VideoSink` (the stream's engine pipeline) with the times the node
measured: when a frame's first packet arrived and how long it took to decode. Its Opus payloads
go, undecoded, to an `AudioSink` (the stream's audio relay). The session refuses a picture over
the node's size limit by ending itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import av
from aiortc import MediaStreamTrack, RTCConfiguration
from aiortc.mediastreams import MediaStreamError

from livegen.rtc import aiortc_adapter
from livegen.rtc.peer import PeerSession
from livegen.rtc.sdp import payload_types

log = logging.getLogger(__name__)


class VideoSink(Protocol):
    def submit(self, frame: av.VideoFrame, arrived_at: float | None = None, decode_ms: float | None = None) -> None:
        """A decoded frame; `arrived_at` (perf_counter) when its first packet arrived, if known."""


class AudioSink(Protocol):
    def push(self, payload: bytes, rtp_timestamp: int) -> None:
        """An Opus payload as it arrived."""


class IngestSession(PeerSession):
    role = "whip"

    def __init__(
        self,
        stream: str,
        config: RTCConfiguration,
        video: VideoSink,
        audio: AudioSink,
        max_size: tuple[int, int] = (1920, 1080),
        **kw: Any,
    ):
        super().__init__(stream, config, **kw)
        self.video = video
        self.audio = audio
        self.max_size = max_size
        self.refused: str | None = None
        self.video_tracks = 0
        self.audio_tracks = 0
        self.last_media = time.monotonic()
        """When the last decoded frame or Opus payload arrived (or the session was made)."""
        self._opus_payload_types: set[int] = set()
        self.pc.on("track", self._on_track)

    def silent_s(self) -> float:
        """Seconds since the publisher last sent media: a crashed publisher's peer can stay
        "connected" for a while (ICE consent) although nothing arrives."""
        return time.monotonic() - self.last_media

    async def negotiate(self, offer_sdp: str) -> str:
        self._opus_payload_types = payload_types(offer_sdp, "audio", "opus")
        return await super().negotiate(offer_sdp)

    def _on_track(self, track: MediaStreamTrack) -> None:
        receiver = next((t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        if track.kind == "video" and self.video_tracks == 0:
            self.video_tracks += 1
            buffer = aiortc_adapter.install_jitter_buffer(receiver) if receiver is not None else None
            self.spawn(self._pump_video(track, buffer), "video-in")
            return
        if track.kind == "audio" and self.audio_tracks == 0 and receiver is not None:
            self.audio_tracks += 1
            audio, opus = self.audio, self._opus_payload_types

            def relay_opus(packet) -> None:
                if packet.payload_type in opus and packet.payload:
                    self.last_media = time.monotonic()
                    audio.push(packet.payload, packet.timestamp)

            aiortc_adapter.tap_rtp(receiver, relay_opus)
        # aiortc still decodes what it receives; reading it keeps its receive queue empty.
        self.spawn(self._drain(track), f"{track.kind}-drain")

    async def _pump_video(self, track: MediaStreamTrack, buffer: aiortc_adapter.FrameOnMarkerJitterBuffer | None) -> None:
        try:
            while True:
                frame = await track.recv()
                self.last_media = time.monotonic()
                if frame.width > self.max_size[0] or frame.height > self.max_size[1]:
                    self.refused = f"{frame.width}x{frame.height} is over the limit of {self.max_size[0]}x{self.max_size[1]}"
                    log.warning("[%s] publish refused: %s", self.tag, self.refused)
                    self.end()
                    return
                times = buffer.arrival(frame.pts) if buffer is not None and frame.pts is not None else None
                if times is None:
                    self.video.submit(frame)
                else:
                    # decode: from the frame's last packet to the decoded picture on this loop
                    self.video.submit(frame, times[0], (time.perf_counter() - times[1]) * 1000.0)
        except MediaStreamError:
            log.info("[%s] video track ended", self.tag)
            self.end()

    @staticmethod
    async def _drain(track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            pass
