"""The bench's own WebRTC peers against the node: what codec they agreed on, publishers that
cost the bench (almost) nothing, and closing them without letting a failed close spoil a
measurement that is already taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection

from livegen.config import OutputSettings
from livegen.media.encoder import RTP_VIDEO_CLOCK, VideoEncoder
from livegen.rtc.aiortc_adapter import encode_with
from livegen.rtc.sdp import codec_preferences, negotiated_codec
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import PacedTrack, SyntheticVideoTrack

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0


def send_like_the_node(pc: RTCPeerConnection, track: MediaStreamTrack, codec: str,
                       settings: OutputSettings) -> VideoEncoder:
    """Add `track` to `pc` as a send-only video offered in `codec` alone and encoded with the
    node's own encoder and `settings` (not aiortc's defaults); the encoder, to describe."""
    transceiver = pc.addTransceiver(track, direction="sendonly")
    transceiver.setCodecPreferences(codec_preferences("video", [codec]))
    encoder = VideoEncoder(codec, settings)
    encode_with(transceiver.sender, encoder)
    return encoder


REPLAY_FRAMES = 60
"""Frames in a replayed publisher's loop: one keyframe interval, two seconds at 30 fps."""


class ReplayedCamera:
    """A publisher's encoder that costs the bench almost nothing, as a remote camera costs the
    node's machine nothing: `camera`'s first `frames` pictures are drawn and encoded once, with
    the node's encoder and settings and a keyframe interval of exactly the loop, then sent
    again and again with each outgoing frame's timestamp. A keyframe request restarts the loop
    at its keyframe. (No delay stamps: a replayed stream is measured on the node's figures.)"""

    def __init__(self, camera: SyntheticVideoTrack, codec: str, settings: OutputSettings, frames: int = REPLAY_FRAMES):
        self.codec = codec
        looped = settings.model_copy(update={"keyframe_interval_s": frames / camera.fps})
        encoder = VideoEncoder(codec, looped, fps=camera.fps)
        self._loop: list[list[bytes]] = []
        for index in range(frames):
            frame = camera.draw(index)
            frame.pts, frame.time_base = round(index * RTP_VIDEO_CLOCK.denominator / camera.fps), RTP_VIDEO_CLOCK
            self._loop.append([bytes(packet) for packet in encoder.encode(frame, keyframe=index == 0)])
        self.described = encoder.describe()
        encoder.close()
        self._next = 0

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> list[av.Packet]:
        if keyframe:
            self._next = 0
        payloads, self._next = self._loop[self._next], (self._next + 1) % len(self._loop)
        pts = int(frame.pts * frame.time_base / RTP_VIDEO_CLOCK) if frame.pts is not None and frame.time_base else 0
        packets = []
        for payload in payloads:
            packet = av.Packet(payload)
            packet.pts, packet.time_base = pts, RTP_VIDEO_CLOCK
            packets.append(packet)
        return packets


class FrameClock(PacedTrack):
    """Paces a replayed publisher: a tiny blank frame per tick, with the camera's timestamps."""

    kind = "video"

    def __init__(self, fps: float):
        super().__init__()
        self.fps = fps
        self.frames_sent = 0
        self._blank = av.VideoFrame.from_ndarray(np.zeros((2, 2, 3), np.uint8), format="rgb24").reformat(format="yuv420p")

    async def recv(self) -> av.VideoFrame:
        index = await self.next_index(1.0 / self.fps)
        self._blank.pts, self._blank.time_base = round(index * RTP_VIDEO_CLOCK.denominator / self.fps), RTP_VIDEO_CLOCK
        self.frames_sent += 1
        return self._blank


async def send_replayed(
    pc: RTCPeerConnection, camera: SyntheticVideoTrack, codec: str, settings: OutputSettings
) -> FrameClock:
    """Like `send_like_the_node`, but the pictures are `camera`'s, encoded once (on a thread:
    other streams keep their pace meanwhile) and replayed (`ReplayedCamera`); the track that
    paces them, to stop."""
    replayed = await asyncio.to_thread(ReplayedCamera, camera, codec, settings)
    clock = FrameClock(camera.fps)
    transceiver = pc.addTransceiver(clock, direction="sendonly")
    transceiver.setCodecPreferences(codec_preferences("video", [codec]))
    encode_with(transceiver.sender, replayed)
    return clock


def video_codec(sdp: str | None) -> str | None:
    """The codec an SDP answer picked for its first video section."""
    return negotiated_codec(sdp, "video") if sdp else None


async def close_quietly(what: str, close: Callable[[], Awaitable[Any]]) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await close()
    except Exception as exc:  # closing is best effort; the measurement is already taken
        log.warning("closing the %s failed: %r", what, exc)


async def close_client(what: str, client: WhipPublisher | WhepViewer) -> None:
    """DELETE the session if the node answers; close the peer in any case, so its threads end."""
    await close_quietly(what, client.close)
    if client.pc.connectionState != "closed":
        await close_quietly(f"{what}'s peer connection", client.pc.close)
