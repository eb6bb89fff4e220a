"""`ViewerSession`: a viewer's sendonly peer (WHEP).

It sends the stream's processed video — the packets encoded once for every viewer of its codec,
or, in per_viewer mode, frames its sender encodes for this viewer alone, with the same encoder
settings — and, when the viewer asked for audio, the publisher's Opus relayed as it was sent. A
PLI/FIR from this viewer asks the stream's shared encoder for a keyframe (per_viewer: its own).
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCConfiguration

from livegen.errors import Unprocessable
from livegen.rtc import aiortc_adapter
from livegen.rtc.peer import PeerSession
from livegen.rtc.sdp import codec_preferences, negotiated_codec
from livegen.rtc.tracks import EncodedVideoTrack, ProcessedVideoTrack, RelayedAudioTrack, ViewerFeed


class ViewerSession(PeerSession):
    role = "whep"

    def __init__(self, stream: str, config: RTCConfiguration, feed: ViewerFeed, audio: bool, **kw: Any):
        super().__init__(stream, config, **kw)
        self.feed = feed
        self.encode_once = feed.output_mode == "encode_once"
        self.track: EncodedVideoTrack | ProcessedVideoTrack = (
            EncodedVideoTrack(feed) if self.encode_once else ProcessedVideoTrack(feed)
        )
        self.audio_track = RelayedAudioTrack(feed) if audio else None
        self.codec: str | None = None

    def prepare_offer(self) -> None:
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        transceiver.setCodecPreferences(codec_preferences("video", list(self.feed.video_codecs)))
        self._sender = transceiver.sender
        if self.audio_track is not None:
            audio = self.pc.addTransceiver(self.audio_track, direction="sendonly")
            audio.setCodecPreferences(codec_preferences("audio", ["opus"]))

    def answered(self, answer: str) -> None:
        self.codec = negotiated_codec(answer, "video")
        if self.codec is None:
            raise Unprocessable("the offer's video section was rejected")
        self.track.bind(self.codec)
        if self.encode_once:
            codec, feed = self.codec, self.feed
            aiortc_adapter.route_keyframe_requests(self._sender, lambda: feed.request_keyframe(codec))
        else:
            aiortc_adapter.encode_with(self._sender, self.feed.frame_encoder(self.codec))

    async def close(self) -> None:
        self.track.stop()
        if self.audio_track is not None:
            self.audio_track.stop()
        await super().close()
