"""WHIP (RFC 9725) / WHEP protocol details: discovery, CORS, ETag, Link, trickle PATCH, restarts."""

from __future__ import annotations

import re

import pytest

from livegen.testing.clients import WhepViewer
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, wait_until
from tests.test_bad_input import SDP, request

FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


def without_candidates(sdp: str) -> tuple[str, list[str]]:
    lines = sdp.splitlines()
    candidates = [line for line in lines if line.startswith("a=candidate:")]
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept) + "\r\n", candidates


def fragment(sdp: str, candidates: list[str], ufrag: str | None = None) -> str:
    real_ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)
    pwd = re.search(r"a=ice-pwd:(\S+)", sdp).group(1)
    mid = re.search(r"a=mid:(\S+)", sdp).group(1)
    lines = [f"a=ice-ufrag:{ufrag or real_ufrag}", f"a=ice-pwd:{pwd}", "m=video 9 UDP/TLS/RTP/SAVPF 0", f"a=mid:{mid}"]
    return "\r\n".join([*lines, *candidates, "a=end-of-candidates"]) + "\r\n"


@pytest.mark.parametrize("settings", [node_settings(rtc={"ice_servers": [
    "stun:stun.example.net:3478", {"url": "turn:turn.example.net?transport=udp", "username": "u", "credential": "p"}
]})])
async def test_discovery_and_cors(live_node, settings):
    for endpoint in ("/whip/cam", "/whep/cam"):
        code, headers, _ = await request(live_node, "OPTIONS", endpoint, headers={"Origin": "https://studio.example"})
        assert code == 204
        assert headers["Accept-Post"] == "application/sdp"
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        assert "Location" in headers["Access-Control-Expose-Headers"]
        links = headers.getall("Link")
        assert '<stun:stun.example.net:3478>; rel="ice-server"' in links
        assert any('username="u"' in link and 'credential="p"' in link for link in links)
    code, headers, _ = await request(live_node, "HEAD", "/whep/cam")
    assert code == 409 and headers["Retry-After"]


async def test_created_headers_and_trickle_patch(live_node):
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(SyntheticVideoTrack(320, 240), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer, candidates = without_candidates(pc.localDescription.sdp)
    assert candidates
    async with live_node.http.post(f"{live_node.url}/whip/cam", data=offer, headers=SDP) as response:
        assert response.status == 201
        answer = await response.text()
        location, etag = response.headers["Location"], response.headers["ETag"]
        assert location.startswith("/whip/cam/") and etag.startswith('"')
        assert response.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    code, _, _ = await request(live_node, "PATCH", location, data=fragment(offer, candidates), headers={**FRAG, "If-Match": '"stale"'})
    assert code == 412
    code, _, _ = await request(live_node, "PATCH", location, data=fragment(offer, candidates), headers=SDP)
    assert code == 415
    code, _, _ = await request(live_node, "PATCH", location, data="a=candidate:broken\r\n", headers=FRAG)
    assert code == 400
    code, _, text = await request(live_node, "PATCH", location, data=fragment(offer, candidates, ufrag="zzzz"), headers={**FRAG, "If-Match": etag})
    assert code == 422 and "restart" in text
    code, _, text = await request(live_node, "PATCH", location, data=fragment(offer, candidates), headers={**FRAG, "If-Match": etag})
    assert code == 204, text
    code, _, _ = await request(live_node, "PATCH", "/whip/cam/nope", data=fragment(offer, candidates), headers=FRAG)
    assert code == 404
    code, headers, _ = await request(live_node, "OPTIONS", location)
    assert code == 204 and "PATCH" in headers["Allow"]

    await wait_until(lambda: live_node.hub.streams["cam"].pipeline.stats.frames_out > 5, timeout=15)
    code, _, _ = await request(live_node, "HEAD", "/whep/cam")
    assert code == 200
    code, _, _ = await request(live_node, "DELETE", location)
    assert code == 200
    await pc.close()
    await wait_until(lambda: not live_node.hub.streams)


async def test_publisher_that_never_sends_candidates_still_connects(live_node):
    """OBS sends an offer without candidates and never trickles: the node must learn the
    publisher's address from its connectivity checks (peer-reflexive candidates)."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(SyntheticVideoTrack(320, 240), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer, _ = without_candidates(pc.localDescription.sdp)
    async with live_node.http.post(f"{live_node.url}/whip/obs", data=offer, headers=SDP) as response:
        assert response.status == 201
        answer, location = await response.text(), response.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    viewer = WhepViewer(live_node.url, "obs", live_node.http)
    await viewer.watch()
    track = await viewer.video()
    frame = await track.recv()
    assert (frame.width, frame.height) == (320, 240)
    await viewer.close()
    await request(live_node, "DELETE", location)
    await pc.close()
