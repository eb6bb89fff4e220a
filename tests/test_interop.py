"""Interoperability with a WebRTC stack other than aiortc: GStreamer's webrtcbin publishing over
WHIP (Debian's packages, driven by tests/interop/gst_whip_publish.py on the system Python)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from livegen.testing.clients import WhepViewer
from tests.conftest import wait_until

SCRIPT = Path(__file__).parent / "interop" / "gst_whip_publish.py"
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.interop


def gstreamer_ready() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = "import gi; gi.require_version('GstWebRTC', '1.0'); gi.require_version('Nice', '0.1')"
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module", autouse=True)
def need_gstreamer():
    if not gstreamer_ready():
        message = "GStreamer's WebRTC stack is missing (scripts/install-interop.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


async def test_gstreamer_webrtcbin_publishes_video_and_audio(live_node):
    process = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, str(SCRIPT), f"{live_node.url}/whip/gst", "--seconds", "6", "--width", "320", "--height", "240",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until(lambda: "gst" in live_node.hub.streams, timeout=20)
        stream = live_node.hub.streams["gst"]
        await wait_until(lambda: stream.pipeline.stats.frames_in > 20 and stream.audio.packets_in > 50, timeout=20)
        viewer = WhepViewer(live_node.url, "gst", live_node.http)
        await viewer.watch(audio=True)
        frame = await (await viewer.video(timeout=15)).recv()
        assert (frame.width, frame.height) == (320, 240)
        await (await viewer.audio()).recv()
        await viewer.close()
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["created", "connected", "deleted"], (events, err.decode()[-2000:])
    assert events[-1]["status"] == 200  # the client's own DELETE ended the session
    await wait_until(lambda: "gst" not in live_node.hub.streams)
