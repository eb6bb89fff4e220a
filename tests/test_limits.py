"""Media limits and ICE network settings: resolution, frame rate, UDP port range, advertised
addresses."""

from __future__ import annotations

import re

import pytest

from livegen.engine.pipeline import StreamPipeline
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, open_sessions, wait_until
from tests.test_bad_input import SDP, real_offer, request


@pytest.mark.parametrize("settings", [node_settings(rtc={"max_width": 640, "max_height": 480})])
async def test_oversized_pictures_end_the_publish(live_node, settings, caplog):
    publisher = WhipPublisher(live_node.url, "big", live_node.http)
    await publisher.publish(SyntheticVideoTrack(800, 600))
    await wait_until(lambda: "big" not in live_node.hub.streams, timeout=15)
    assert "800x600 is over the limit of 640x480" in caplog.text
    await publisher.close()
    small = WhipPublisher(live_node.url, "small", live_node.http)
    await small.publish(SyntheticVideoTrack(640, 480))
    viewer = WhepViewer(live_node.url, "small", live_node.http)
    await viewer.watch()
    assert (await (await viewer.video()).recv()).width == 640
    await viewer.close()
    await small.close()


@pytest.mark.parametrize("settings", [node_settings(rtc={"max_fps": 15})])
async def test_frame_rate_limit(live_node, settings):
    offer = (await real_offer()).replace("a=sendonly", "a=sendonly\r\na=framerate:30")
    code, _, text = await request(live_node, "POST", "/whip/cam", data=offer, headers=SDP)
    assert code == 422 and "30 fps" in text
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(160, 120, fps=30))
    stream = live_node.hub.streams["cam"]
    await wait_until(lambda: stream.pipeline.stats.frames_in >= 60, timeout=15)
    stats = stream.pipeline.stats
    assert stats.dropped["fps_limit"] >= 0.35 * stats.frames_in  # about half of 30 fps is over 15
    await publisher.close()


def test_token_bucket_allows_bursts_not_sustained_excess(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("livegen.engine.pipeline.time.perf_counter", lambda: now[0])
    pipeline = StreamPipeline("s", chain=None, emit=lambda f: None, max_fps=30)  # type: ignore[arg-type]
    admitted = []
    for i in range(600):  # 60 fps for 10 s: half of it is over the limit
        now[0] = i / 60
        admitted.append(pipeline._admit())
    assert 300 <= sum(admitted) <= 316  # 30 fps plus the initial half-second burst
    now[0] = 20.0
    admitted = [pipeline._admit() for _ in range(20)]  # a stall's backlog arriving at once
    assert sum(admitted) == 15  # half a second at 30 fps passes; the rest is cut
    for i in range(1, 301):  # a steady 30 fps with jitter loses nothing
        now[0] = 30.0 + i / 30 + (0.02 if i % 7 == 0 else 0.0)
        assert pipeline._admit()


@pytest.mark.parametrize(
    "settings", [node_settings(rtc={"udp_ports": [42100, 42109], "advertised_addresses": ["203.0.113.7"]})]
)
async def test_port_range_and_advertised_address(live_node, settings):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    answer = publisher.pc.remoteDescription.sdp
    hosts = re.findall(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", answer)
    local = [(ip, int(port)) for ip, port in hosts if ip == "127.0.0.1"]
    advertised = [(ip, int(port)) for ip, port in hosts if ip == "203.0.113.7"]
    assert local and all(42100 <= port <= 42109 for _, port in local)
    assert [port for _, port in advertised] == [port for _, port in local]
    viewer = WhepViewer(live_node.url, "cam", live_node.http)
    await viewer.watch()
    await (await viewer.video()).recv()  # media flows over the ranged ports
    await viewer.close()
    await publisher.close()
    await wait_until(lambda: not open_sessions())


def test_bad_network_settings_are_refused():
    from livegen.errors import ConfigError

    for rtc, key in (({"udp_ports": [50000, 40000]}, "rtc.udp_ports"), ({"advertised_addresses": ["nat.example"]}, "rtc.advertised_addresses")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            node_settings(rtc=rtc)
