"""Publishers as broadcast tools send them: OBS (30.2+) and GStreamer's WHIP clients.

OBS: an offer with no candidates that never trickles, H.264 `profile-level-id=42e01f;
packetization-mode=1` carrying a main-profile bitstream without B-frames, Opus on payload type
111, a Bearer token, and only 201 accepted. GStreamer: gathers every candidate before POSTing.
"""

from __future__ import annotations

import asyncio
import fractions
import re

import av
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticAudioTrack, SyntheticVideoTrack
from tests.conftest import node_settings, wait_until
from tests.test_whip_whep_protocol import without_candidates

TOKEN = "obs-stream-key-123"


class MainProfileH264Track(MediaStreamTrack):
    """Pre-encoded H.264 main profile, no B-frames, as OBS's x264 sends it; aiortc's sender
    packetizes the packets as they are."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 360, fps: float = 30):
        super().__init__()
        self.source = SyntheticVideoTrack(width, height, fps)
        self.codec = av.CodecContext.create("libx264", "w")
        self.codec.width, self.codec.height = width, height
        self.codec.pix_fmt = "yuv420p"
        self.codec.time_base = fractions.Fraction(1, 90000)
        self.codec.options = {
            "preset": "ultrafast", "tune": "zerolatency", "profile": "main", "x264-params": "bframes=0:keyint=30:cabac=1",
        }
        self.profiles: set[int] = set()

    def _encode(self, frame: av.VideoFrame) -> list[av.Packet]:
        packets = list(self.codec.encode(frame))
        for packet in packets:
            data = bytes(packet)
            for match in re.finditer(b"\x00\x00\x01([\x27\x67])(.)", data, re.DOTALL):
                self.profiles.add(match.group(2)[0])  # SPS: profile_idc follows the NAL header
            packet.time_base = fractions.Fraction(1, 90000)
        return packets

    async def recv(self) -> av.Packet:
        while True:
            frame = await self.source.recv()
            packets = await asyncio.get_running_loop().run_in_executor(None, self._encode, frame)
            if packets:
                return packets[0]


def obs_offer(sdp: str) -> str:
    """Opus on PT 111 as OBS sends it (aiortc uses 96), and no candidates."""
    sdp, _ = without_candidates(sdp)
    out, in_audio = [], False
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            in_audio = line.startswith("m=audio")
        if in_audio:
            line = re.sub(r"(?<![0-9])96(?![0-9])", "111", line)
        out.append(line)
    return "\r\n".join(out)


@pytest.mark.parametrize("settings", [node_settings(auth={"publish_tokens": {"obs": TOKEN}})])
async def test_obs_style_publisher(live_node, settings):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = MainProfileH264Track()
    vt = pc.addTransceiver(video, direction="sendonly")
    vt.setCodecPreferences([
        c for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType == "video/H264" and c.parameters.get("profile-level-id") == "42e01f"
    ])
    at = pc.addTransceiver(SyntheticAudioTrack(beep_every_s=0.5), direction="sendonly")
    at.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"])
    await pc.setLocalDescription(await pc.createOffer())
    offer = obs_offer(pc.localDescription.sdp)
    assert "a=candidate" not in offer and "a=rtpmap:111 opus/48000/2" in offer
    assert "profile-level-id=42e01f" in offer and "VP8" not in offer

    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"}
    async with live_node.http.post(f"{live_node.url}/whip/obs", data=offer, headers=headers) as response:
        assert response.status == 201  # OBS accepts nothing else
        answer, location = await response.text(), response.headers["Location"]
    assert "a=rtpmap:111 opus/48000/2" in answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    viewer = WhepViewer(live_node.url, "obs", live_node.http)
    await viewer.watch(audio=True)
    frames = []
    async with asyncio.timeout(15):
        track = await viewer.video()
        while len(frames) < 20:
            frames.append(await track.recv())
    assert (frames[-1].width, frames[-1].height) == (640, 360)
    assert video.profiles == {77}  # what was sent really was main profile
    stream = live_node.hub.streams["obs"]
    await wait_until(lambda: stream.audio.packets_out > 20)
    assert (await (await viewer.audio()).recv()).sample_rate == 48000

    await viewer.close()
    async with live_node.http.delete(f"{live_node.url}{location}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
    await pc.close()
    await wait_until(lambda: not live_node.hub.streams)


async def test_gstreamer_style_publisher_gathers_before_post(live_node):
    """GStreamer's WHIP clients send every candidate in the offer and never PATCH."""
    publisher = WhipPublisher(live_node.url, "gst", live_node.http)
    await publisher.publish(SyntheticVideoTrack(640, 360), SyntheticAudioTrack())
    assert "a=candidate" in publisher.pc.localDescription.sdp
    assert "a=end-of-candidates" in publisher.pc.localDescription.sdp
    viewer = WhepViewer(live_node.url, "gst", live_node.http)
    await viewer.watch(audio=True)
    assert (await (await viewer.video()).recv()).height == 360
    await (await viewer.audio()).recv()
    await viewer.close()
    await publisher.close()
