"""The bench's own WebRTC peers against the node: what codec they agreed on, and closing them
without letting a failed close spoil a measurement that is already taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection

from livegen.config import OutputSettings
from livegen.media.encoder import VideoEncoder
from livegen.rtc.aiortc_adapter import encode_with
from livegen.rtc.sdp import codec_preferences, negotiated_codec
from livegen.testing.clients import WhepViewer, WhipPublisher

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
