"""Session URLs are capabilities; a wildcard publish token is no operator; HEAD has no body.

A WHIP/WHEP session's `Location` is the one thing that lets its holder end or trickle into it,
so the API must never show it to anyone else; the ids it shows are public ones, which end a
viewer only through the operator's route.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest

from livegen.hub.stream import public_id
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, wait_until
from tests.test_bad_input import request

PUBLISH, WILDCARD, VIEW, OPERATOR = "pub-cap-cam", "pub-cap-any", "view-cap", "op-cap-123"
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def path_of(location: str) -> str:
    return urlsplit(location).path


@pytest.mark.parametrize("settings", [node_settings(auth={
    "publish_tokens": {"cam": PUBLISH}, "viewer_tokens": {"*": VIEW}, "operator_token": OPERATOR,
})])
async def test_a_viewer_can_neither_see_nor_end_another_viewers_session(live_node, settings):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, token=PUBLISH)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    mallory, alice = (WhepViewer(live_node.url, "cam", live_node.http, token=VIEW) for _ in range(2))
    for viewer in (mallory, alice):
        await viewer.watch()
        await (await viewer.video()).recv()
    alice_path = path_of(alice.location)
    alice_secret = alice_path.rsplit("/", 1)[1]

    # a viewer learns how many watch, not who
    code, _, text = await request(live_node, "GET", "/api/streams/cam", headers=bearer(VIEW))
    assert code == 200, text
    assert json.loads(text)["viewers"] == 2 and json.loads(text)["viewer_sessions"] == []
    assert alice_secret not in text
    # the publisher and the operator see public ids, which are no session's secret
    for token in (PUBLISH, OPERATOR):
        code, _, text = await request(live_node, "GET", "/api/streams/cam", headers=bearer(token))
        shown = [v["id"] for v in json.loads(text)["viewer_sessions"]]
        assert code == 200 and len(shown) == 2, token
        assert alice_secret not in text and public_id(alice_secret) in shown
    code, _, text = await request(live_node, "GET", "/api/streams", headers=bearer(OPERATOR))
    assert code == 200 and alice_secret not in text

    # what the API shows opens no session: not to a viewer, not to the operator
    public = f"/whep/cam/{public_id(alice_secret)}"
    for token in (VIEW, OPERATOR):
        code, _, _ = await request(live_node, "DELETE", public, headers=bearer(token))
        assert code == 404, token
        code, _, _ = await request(live_node, "PATCH", public, data="a=end-of-candidates\r\n", headers={**FRAG, **bearer(token)})
        assert code == 404, token
    # ending a viewer by its public id is the operator's alone, and takes no session secret
    by_id = f"/api/streams/cam/viewers/{public_id(alice_secret)}"
    for token, status in ((None, 401), (VIEW, 403), (PUBLISH, 403)):
        code, _, _ = await request(live_node, "DELETE", by_id, headers=bearer(token))
        assert code == status, token
    code, _, _ = await request(live_node, "DELETE", f"/api/streams/cam/viewers/{alice_secret}", headers=bearer(OPERATOR))
    assert code == 404
    assert len(live_node.hub.streams["cam"].viewers) == 2

    code, _, text = await request(live_node, "DELETE", by_id, headers=bearer(OPERATOR))
    assert code == 200, text
    assert list(live_node.hub.streams["cam"].viewers) == [path_of(mallory.location).rsplit("/", 1)[1]]
    alice.location = None  # already ended
    for _ in range(3):  # the other viewer keeps playing
        await asyncio.wait_for((await mallory.video()).recv(), 5)
    # the session's own URL still works for its holder
    assert await mallory.close() == 200
    assert await publisher.close() == 200
    await wait_until(lambda: not live_node.hub.streams)


@pytest.mark.parametrize("settings", [node_settings(auth={
    "publish_tokens": {"*": WILDCARD, "cam": PUBLISH}, "operator_token": OPERATOR,
})])
async def test_a_wildcard_publish_token_acts_on_the_streams_it_may_publish_only(live_node, settings):
    publishers = {
        "mine": WhipPublisher(live_node.url, "mine", live_node.http, token=WILDCARD),
        "cam": WhipPublisher(live_node.url, "cam", live_node.http, token=PUBLISH),
    }
    for publisher in publishers.values():
        await publisher.publish(SyntheticVideoTrack(160, 120))

    for path in ("/api/streams", "/metrics", "/api/node", "/api/recordings"):
        for token, status in ((WILDCARD, 403), (PUBLISH, 403), (OPERATOR, 200)):
            code, _, _ = await request(live_node, "GET", path, headers=bearer(token))
            assert code == status, (path, token)

    patch = {"preset": "edges"}
    code, _, _ = await request(live_node, "PATCH", "/api/streams/mine", json=patch, headers=bearer(WILDCARD))
    assert code == 200
    for token, status in ((WILDCARD, 403), (PUBLISH, 200)):  # cam has a token of its own
        code, _, _ = await request(live_node, "PATCH", "/api/streams/cam", json=patch, headers=bearer(token))
        assert code == status, token
    code, _, _ = await request(live_node, "DELETE", "/api/streams/cam", headers=bearer(WILDCARD))
    assert code == 403 and "cam" in live_node.hub.streams

    assert await publishers["mine"].close() == 200  # its own session URL, its own token
    assert await publishers["cam"].close() == 200
    await wait_until(lambda: not live_node.hub.streams)


@pytest.mark.parametrize("settings", [node_settings(auth={"operator_token": OPERATOR})])
async def test_an_open_publish_ends_by_its_session_url_without_a_token(live_node, settings):
    # publishing is open here, so the session's URL is all its publisher holds
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    code, _, _ = await request(live_node, "DELETE", "/api/streams/cam")
    assert code == 401  # ending someone's stream without its URL is still the operator's
    assert await publisher.close() == 200
    await wait_until(lambda: not live_node.hub.streams)


async def _exchange_raw(url: str, requests: list[tuple[str, str]]) -> bytes:
    """Send the requests pipelined on one keep-alive connection; the last one closes it."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    reader, writer = await asyncio.open_connection(host, port)
    lines = []
    for i, (method, path) in enumerate(requests):
        close = "close" if i == len(requests) - 1 else "keep-alive"
        lines.append(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {close}\r\n\r\n")
    writer.write("".join(lines).encode())
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_head_answers_have_no_body(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    heads = [
        ("/whep/cam", 200), ("/whep/nobody", 409), ("/whep/bad%20name", 400),
        ("/api/streams/nobody", 404), ("/api/streams/cam", 200), ("/api/recordings/00000000/file", 404),
        ("/api/presets", 200), ("/health", 200),
    ]
    data = await _exchange_raw(live_node.url, [*(("HEAD", p) for p, _ in heads), ("GET", "/health")])
    # each HEAD answer is its status line and headers only: the next answer starts right after
    for path, status in heads:
        assert data.startswith(f"HTTP/1.1 {status} ".encode()), (path, data[:200])
        _, _, data = data.partition(b"\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and json.loads(body) == {"status": "ok"}
    await publisher.close()


async def test_a_forged_session_id_of_any_characters_is_a_404(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    try:
        for forged in ("%C3%A9t%C3%A9", "x" * 200, "%00"):
            for method in ("DELETE", "PATCH"):
                code, _, _ = await request(live_node, method, f"/whip/cam/{forged}",
                                           data="a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                           headers={"Content-Type": "application/trickle-ice-sdpfrag"})
                assert code in (400, 404), (forged, method, code)
        assert "cam" in live_node.hub.streams
    finally:
        await publisher.close()
