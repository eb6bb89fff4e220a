"""Bad requests get the exact status of the HTTP contract, a problem+json body, and leak nothing."""

from __future__ import annotations

import pytest

from livegen.testing.clients import SignallingError, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import open_sessions, wait_until

SDP = {"Content-Type": "application/sdp"}
# Well-formed SDP that aiortc still refuses (no ICE credentials, no DTLS fingerprint).
HOLLOW_OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=sendonly\r\n"
AUDIO_ONLY = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n"


async def request(node, method: str, path: str, **kw):
    async with node.http.request(method, node.url + path, **kw) as response:
        body = await response.text()
        return response.status, response.headers, body


def assert_nothing_left(node) -> None:
    hub = node.hub
    assert not hub.streams and not hub._negotiating
    assert not open_sessions()


async def real_offer(kind: str = "whip") -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if kind == "whip":
        pc.addTransceiver(SyntheticVideoTrack(160, 120), direction="sendonly")
    else:
        pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.mark.parametrize("endpoint", ["/whip/cam", "/whep/cam"])
@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ("v=0\r\n", {"Content-Type": "text/plain"}, 415),
        ("v=0\r\n", {}, 415),
        ("", SDP, 400),
        ("hello, node", SDP, 400),
        ("v=0\r\nthis is not sdp\r\n", SDP, 400),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", SDP, 400),
        (b"\xff\xfe\x00v=0", SDP, 400),
        ("v=0\r\n" + "a=x\r\n" * 20_000, SDP, 413),
    ],
)
async def test_bad_offers(live_node, endpoint, body, headers, status):
    if endpoint == "/whep/cam" and status == 400:
        publisher = WhipPublisher(live_node.url, "cam", live_node.http)
        await publisher.publish(SyntheticVideoTrack(160, 120))  # so the viewer's offer is parsed
    else:
        publisher = None
    code, response_headers, text = await request(live_node, "POST", endpoint, data=body, headers=headers)
    assert code == status, text
    assert response_headers["Content-Type"].startswith("application/problem+json")
    if publisher:
        await publisher.close()
        await wait_until(lambda: not live_node.hub.streams)
    assert_nothing_left(live_node)


async def test_offer_aiortc_refuses_is_400_not_500(live_node):
    code, _, text = await request(live_node, "POST", "/whip/cam", data=HOLLOW_OFFER, headers=SDP)
    assert code == 400, text
    assert_nothing_left(live_node)


async def test_offer_without_video_is_422(live_node):
    code, _, text = await request(live_node, "POST", "/whip/cam", data=AUDIO_ONLY, headers=SDP)
    assert code == 422 and "video" in text
    # a viewer that offers to send instead of receive
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    code, _, text = await request(live_node, "POST", "/whep/cam", data=await real_offer("whip"), headers=SDP)
    assert code == 422, text
    await publisher.close()
    await wait_until(lambda: not live_node.hub.streams)
    assert_nothing_left(live_node)


async def test_chunked_oversized_body_is_413(live_node):
    async def chunks():
        for _ in range(100):
            yield b"a=x" * 1000

    code, _, _ = await request(live_node, "POST", "/whip/cam", data=chunks(), headers=SDP)
    assert code == 413
    assert_nothing_left(live_node)


async def test_second_publisher_gets_409_and_first_keeps_streaming(live_node):
    first = WhipPublisher(live_node.url, "cam", live_node.http)
    await first.publish(SyntheticVideoTrack(160, 120))
    second = WhipPublisher(live_node.url, "cam", live_node.http)
    with pytest.raises(SignallingError) as err:
        await second.publish(SyntheticVideoTrack(160, 120))
    assert err.value.status == 409
    await second.close()
    frames_before = live_node.hub.streams["cam"].pipeline.stats.frames_out
    await wait_until(lambda: live_node.hub.streams["cam"].pipeline.stats.frames_out > frames_before + 5)
    await first.close()
    await wait_until(lambda: not live_node.hub.streams)
    assert_nothing_left(live_node)


async def test_unknown_stream_and_session(live_node):
    code, headers, _ = await request(live_node, "POST", "/whep/nobody", data=await real_offer("whep"), headers=SDP)
    assert code == 409 and int(headers["Retry-After"]) > 0
    for path in ("/whip/nobody/abc", "/whep/nobody/abc"):
        code, _, _ = await request(live_node, "DELETE", path)
        assert code == 404
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    for path in ("/whip/cam/not-a-session", "/whep/cam/not-a-session"):
        code, _, _ = await request(live_node, "DELETE", path)
        assert code == 404
    assert "cam" in live_node.hub.streams  # a wrong DELETE does not end the stream
    code, _, _ = await request(live_node, "GET", "/api/streams/nobody")
    assert code == 404
    await publisher.close()
    await wait_until(lambda: not live_node.hub.streams)
    assert_nothing_left(live_node)


async def test_bad_names_presets_and_methods(live_node):
    offer = await real_offer()
    code, _, _ = await request(live_node, "POST", "/whip/bad.name", data=offer, headers=SDP)
    assert code == 400
    code, _, text = await request(live_node, "POST", "/whip/cam?preset=nope", data=offer, headers=SDP)
    assert code == 422 and "nope" in text
    code, headers, _ = await request(live_node, "PUT", "/whip/cam", data=offer, headers=SDP)
    assert code == 405 and "POST" in headers["Allow"]
    code, _, _ = await request(live_node, "GET", "/no/such/page")
    assert code == 404
    assert_nothing_left(live_node)


async def test_patch_stream_validation(live_node):
    code, _, _ = await request(live_node, "PATCH", "/api/streams/cam", json={"preset": "edges"})
    assert code == 404
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset="grayscale")
    await publisher.publish(SyntheticVideoTrack(160, 120))
    cases = [
        ({"data": "{", "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": "preset=edges", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415),
        ({"json": {"preset": "nope"}}, 422),
        ({"json": {"colour": "red"}}, 422),
        ({"json": ["edges"]}, 422),
    ]
    for kw, status in cases:
        code, _, text = await request(live_node, "PATCH", "/api/streams/cam", **kw)
        assert code == status, (kw, text)
    assert live_node.hub.streams["cam"].preset == "grayscale"  # bad patches changed nothing
    code, _, text = await request(live_node, "PATCH", "/api/streams/cam", json={"preset": "edges"})
    assert code == 200 and '"preset": "edges"' in text
    assert live_node.hub.streams["cam"].pipeline.chain.preset == "edges"
    await publisher.close()
    await wait_until(lambda: not live_node.hub.streams)


async def test_racing_publishers_one_wins(live_node):
    import asyncio

    offers = [await real_offer(), await real_offer()]
    results = await asyncio.gather(
        *(request(live_node, "POST", "/whip/race", data=offer, headers=SDP) for offer in offers)
    )
    assert sorted(code for code, _, _ in results) == [201, 409]
    location = next(headers["Location"] for code, headers, _ in results if code == 201)
    await request(live_node, "DELETE", location)
    await wait_until(lambda: not live_node.hub.streams)
    assert_nothing_left(live_node)
