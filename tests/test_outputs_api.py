"""The outputs API end to end: a live stream pushed over WHIP to a second node, whose viewer sees
the processed pictures; bad URLs, auth and limits answered with the right status; no token or
stream key in any answer."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest

from livegen.api.keys import HUB
from livegen.media.convert import frame_to_rgb
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, start_node, wait_until
from tests.test_bad_input import request

PUBLISH, OPERATOR, VIEW = "pub-secret-outputs", "op-secret-outputs", "view-secret-outputs"
PUSH_TOKEN = "far-end-secret-token"


@pytest.fixture
def settings():
    return node_settings(
        auth={"publish_tokens": {"cam": PUBLISH}, "viewer_tokens": {"*": VIEW}, "operator_token": OPERATOR},
        relay={"max_outputs_per_stream": 2},
    )


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def publish(node, preset: str = "grayscale") -> WhipPublisher:
    publisher = WhipPublisher(node.url, "cam", node.http, preset=preset, token=PUBLISH)
    await publisher.publish(SyntheticVideoTrack(320, 240, fps=15))
    await wait_until(lambda: "cam" in node.hub.streams)
    return publisher


async def test_whip_push_reaches_a_second_node_with_the_processed_pictures(live_node):
    runner, far_url = await start_node(node_settings(
        engine={"default_preset": "passthrough"}, auth={"publish_tokens": {"relayed": PUSH_TOKEN}},
    ))
    publisher = await publish(live_node)
    try:
        body = {"url": f"{far_url}/whip/relayed", "name": "to the far node", "token": PUSH_TOKEN}
        code, _, text = await request(live_node, "POST", "/api/streams/cam/outputs", json=body, headers=bearer(PUBLISH))
        assert code == 201, text
        created = json.loads(text)
        assert created["name"] == "to the far node" and created["kind"] == "whip"
        assert PUSH_TOKEN not in text
        far = runner.app[HUB]
        await wait_until(lambda: "relayed" in far.streams, timeout=20)

        viewer = WhepViewer(far_url, "relayed", live_node.http)
        await viewer.watch()
        track = await viewer.video(timeout=15)
        frame = None
        for _ in range(40):  # past the first pictures, which may still be the keyframe ramp-up
            frame = frame_to_rgb(await track.recv())
        assert frame is not None
        colour_spread = np.abs(frame.astype(int) - frame.mean(axis=2, keepdims=True)).mean()
        assert colour_spread < 3, "the far node gets the grayscale pictures, not the colour bars"
        await viewer.close()

        code, _, text = await request(live_node, "GET", "/api/streams/cam/outputs", headers=bearer(OPERATOR))
        assert code == 200 and PUSH_TOKEN not in text
        [listed] = json.loads(text)["outputs"]
        assert listed["state"] == "live" and listed["bytes"] > 0 and listed["id"] == created["id"]
        info = json.loads((await request(live_node, "GET", "/api/streams/cam", headers=bearer(OPERATOR)))[2])
        assert [o["id"] for o in info["outputs"]] == [created["id"]]

        code, _, _ = await request(live_node, "DELETE", f"/api/streams/cam/outputs/{created['id']}", headers=bearer(PUBLISH))
        assert code == 200
        await wait_until(lambda: "relayed" not in far.streams, timeout=10)  # the push DELETEd its session
    finally:
        await publisher.close()
        await runner.cleanup()


async def test_bad_output_requests_get_clear_answers(live_node):
    publisher = await publish(live_node, preset="passthrough")
    path = "/api/streams/cam/outputs"
    try:
        cases = [
            ({"url": "srt://127.0.0.1:9000"}, 422, "libsrt"),
            ({"url": "ftp://example.com/x"}, 422, "rtmp://"),
            ({"url": "rtmp:///nohost"}, 422, "url"),
            ({"name": "no url"}, 422, "url"),
            ({"url": "rtmp://127.0.0.1/live/k", "extra": 1}, 422, "extra"),
        ]
        for body, status, words in cases:
            code, _, text = await request(live_node, "POST", path, json=body, headers=bearer(OPERATOR))
            assert code == status and words in text, (body, code, text)
        code, _, _ = await request(live_node, "POST", path, data="{nope", headers={**bearer(OPERATOR), "Content-Type": "application/json"})
        assert code == 400
        for token, status in ((None, 401), (VIEW, 403)):
            code, _, _ = await request(live_node, "POST", path, json={"url": "rtmp://127.0.0.1:1/live/k"}, headers=bearer(token))
            assert code == status
        code, _, _ = await request(live_node, "POST", "/api/streams/other/outputs", json={"url": "rtmp://127.0.0.1:1/a/b"}, headers=bearer(OPERATOR))
        assert code == 404
        code, _, _ = await request(live_node, "DELETE", f"{path}/nothing", headers=bearer(OPERATOR))
        assert code == 404

        # an output to a port nobody listens on retries; the stream key never shows
        for _ in range(2):
            code, _, text = await request(live_node, "POST", path, json={"url": "rtmp://127.0.0.1:1/live/SECRETKEY"}, headers=bearer(OPERATOR))
            assert code == 201 and "SECRETKEY" not in text
        code, headers, text = await request(live_node, "POST", path, json={"url": "rtmp://127.0.0.1:1/live/k3"}, headers=bearer(OPERATOR))
        assert code == 503 and "Retry-After" in headers  # max_outputs_per_stream: 2
        stream = live_node.hub.streams["cam"]
        await wait_until(lambda: all(o["state"] == "retrying" for o in stream.outputs.statuses()), timeout=15)
        metrics = (await request(live_node, "GET", "/metrics", headers=bearer(OPERATOR)))[2]
        assert "SECRETKEY" not in metrics
        retrying = re.findall(r'livegen_output_state\{([^}]*state="retrying"[^}]*)\} 1\.0', metrics)
        assert len(retrying) == 2 and all('kind="rtmp"' in labels for labels in retrying)
    finally:
        await publisher.close()
    await wait_until(lambda: not live_node.hub.streams)


def test_srt_is_refused_because_pyav_has_no_libsrt():
    import av

    with pytest.raises(av.error.ProtocolNotFoundError):
        container = av.open("srt://127.0.0.1:9", "w", format="mpegts")
        container.add_mux_stream("h264", rate=30, width=64, height=64)
        container.start_encoding()


async def test_a_stuck_output_slows_neither_the_stream_nor_its_viewers(live_node):
    """An RTMP server that accepts and then never reads: the output's own queue takes the
    backlog; the viewer keeps its frame rate."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []
    loop = asyncio.get_running_loop()
    acceptor = loop.run_in_executor(None, lambda: accepted.append(silent.accept()[0]))
    publisher = await publish(live_node, preset="passthrough")
    viewer = WhepViewer(live_node.url, "cam", live_node.http, token=VIEW)
    try:
        await viewer.watch()
        track = await viewer.video(timeout=15)
        port = silent.getsockname()[1]
        code, _, text = await request(live_node, "POST", "/api/streams/cam/outputs",
                                      json={"url": f"rtmp://127.0.0.1:{port}/live/k"}, headers=bearer(OPERATOR))
        assert code == 201, text
        await acceptor
        for _ in range(10):
            await track.recv()
        started, frames = loop.time(), 0
        while loop.time() - started < 3:
            await track.recv()
            frames += 1
        assert frames / 3 > 12, f"{frames / 3:.1f} fps at the viewer (15 sent)"
        assert live_node.hub.streams["cam"].info()["fps_out"] > 12
    finally:
        await viewer.close()
        await publisher.close()
        for sock in (*accepted, silent):
            sock.close()
