"""Capacity limits: /ready and WHIP/WHEP answer 503 + Retry-After when the node is full."""

from __future__ import annotations

import pytest

from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, wait_until
from tests.test_bad_input import SDP, assert_nothing_left, real_offer, request


@pytest.fixture
def settings():
    return node_settings(rtc={"max_streams": 1, "max_viewers_per_stream": 1})


async def test_capacity_gives_503_with_retry_after(live_node):
    code, _, _ = await request(live_node, "GET", "/ready")
    assert code == 200
    first = WhipPublisher(live_node.url, "one", live_node.http)
    await first.publish(SyntheticVideoTrack(160, 120))
    code, headers, _ = await request(live_node, "GET", "/ready")
    assert code == 503 and headers["Retry-After"]
    code, headers, _ = await request(live_node, "POST", "/whip/two", data=await real_offer(), headers=SDP)
    assert code == 503 and headers["Retry-After"]
    viewer = WhepViewer(live_node.url, "one", live_node.http)
    await viewer.watch()
    code, headers, _ = await request(live_node, "POST", "/whep/one", data=await real_offer("whep"), headers=SDP)
    assert code == 503 and headers["Retry-After"]
    await viewer.close()
    await first.close()
    await wait_until(lambda: not live_node.hub.streams)
    code, _, _ = await request(live_node, "GET", "/ready")
    assert code == 200
    assert_nothing_left(live_node)
