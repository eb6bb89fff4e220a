"""The webcam page comes back by itself when the node drops it: it says so, waits with backoff
and full jitter, republishes the camera it already has, and plays the processed stream again.
Stop ends the waiting, and an answer that would not change (the stream taken) ends it with the
node's reason. Headless Chromium against the real node, as in test_browser.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from livegen.testing.clients import WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests import test_browser
from tests.conftest import node_settings, open_sessions, wait_until
from tests.test_browser import STATE, evidence, stream_name

browser = test_browser.browser  # the same headless Chromium fixture

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

# Every text the status line shows from now on, and the camera stream the page holds now.
RECORD = """(() => {
  const status = document.getElementById('status');
  window.statusLog = [];
  window.camera = document.getElementById('local').srcObject;
  new MutationObserver(() => window.statusLog.push(status.textContent))
    .observe(status, { childList: true, characterData: true, subtree: true });
})()"""
SAME_CAMERA = """(() => {
  const camera = document.getElementById('local').srcObject;
  return camera === window.camera && camera.getVideoTracks()[0].readyState === 'live';
})()"""
STATUS = "document.getElementById('status').textContent"


def countdowns(log: list[str], attempt: int, reason: str) -> list[str]:
    pattern = rf"Connection lost — reconnecting in \d+ s \(attempt {attempt}\)… \({re.escape(reason)}\)"
    return [text for text in log if re.fullmatch(pattern, text)]


async def publish_from_page(live_node, page, stream: str) -> None:
    await page.navigate(f"{live_node.url}/?autostart=1&stream={stream}&preset=passthrough")
    await page.wait_for(f"{STATE}.state === 'publishing' && {STATE}.framesDecoded >= 5", timeout=40)
    await page.evaluate(RECORD)


async def test_webcam_page_republishes_after_the_node_ends_its_stream(live_node, browser, tmp_path):
    stream = stream_name("again")
    page = await browser.new_page()
    async with evidence(tmp_path, webcam=page):
        await publish_from_page(live_node, page, stream)
        first = live_node.hub.streams[stream]

        # The operator ends the stream: the node closes the page's publisher and its viewer.
        async with live_node.http.delete(f"{live_node.url}/api/streams/{stream}") as response:
            assert response.status == 200
        await page.wait_for(f"{STATE}.reconnects === 1 && {STATE}.state === 'publishing'", timeout=20)
        log = await page.evaluate("window.statusLog")
        assert countdowns(log, 1, "the node ended the session"), log
        assert (await page.evaluate(STATUS)).startswith("Reconnected — publishing"), log

        # Dropped again at once (the connection did not hold 10 s): the backoff grows, attempt 2
        # waits up to 2 s (1.9 s here).
        await page.evaluate("Math.random = () => 0.95")
        async with live_node.http.delete(f"{live_node.url}/api/streams/{stream}") as response:
            assert response.status == 200
        await page.wait_for(f"{STATE}.reconnects === 2 && {STATE}.state === 'publishing'", timeout=20)
        log = await page.evaluate("window.statusLog")
        assert countdowns(log, 2, "the node ended the session")[:1] == [
            "Connection lost — reconnecting in 2 s (attempt 2)… (the node ended the session)"], log

        # A new stream on the node, fed by the page's camera, and played back on the page.
        again = live_node.hub.streams[stream]
        assert again is not first and again.ingest is not None
        await wait_until(lambda: again.pipeline.stats.frames_in >= 30, timeout=20)
        # the page watches its stream again too (its viewer reconnects after its publisher)
        await wait_until(lambda: len(again.viewers) == 1, timeout=20)
        async with live_node.http.get(f"{live_node.url}/api/streams/{stream}") as response:
            info = await response.json()
        assert (info["state"], info["viewers"]) == ("live", 1) and info["frames_in"] >= 30, info
        await page.wait_for(f"{STATE}.framesDecoded >= 10 && {STATE}.processedFps > 0", timeout=20)
        assert await page.evaluate(SAME_CAMERA), "the page opened the camera again"

        await page.evaluate("document.getElementById('stop').click()")
        await page.wait_for(f"{STATE}.state === 'idle'", timeout=10)
        await wait_until(lambda: stream not in live_node.hub.streams, timeout=10)
        await wait_until(lambda: not open_sessions(), timeout=10)


def go_silent(session) -> None:
    """Drop every packet of a node-side peer both ways, as a dead network would: no DTLS alert,
    no close, nothing. (aioice's sockets, reached through aiortc internals: a test-only cut.)"""
    ice = session.pc.getTransceivers()[0].receiver.transport.transport
    for protocol in ice._connection._protocols:
        protocol.datagram_received = lambda data, addr: None
        protocol.transport.sendto = lambda data, addr=None: None


async def test_webcam_page_comes_back_after_its_network_goes_silent(live_node, browser, tmp_path):
    """No answer at all from the node: the page's connections go "disconnected" and stay so; the
    page gives them a few seconds, then republishes, replacing its own silent publisher."""
    stream = stream_name("silent")
    page = await browser.new_page()
    async with evidence(tmp_path, webcam=page):
        await publish_from_page(live_node, page, stream)
        held = live_node.hub.streams[stream]
        silent = held.ingest
        for session in (silent, *held.viewers.values()):
            go_silent(session)

        # Both of the page's connections went silent; one reconnect brings both back (the one
        # noticed second, if it had not given up by then, is dropped with the first).
        await page.wait_for(f"{STATE}.reconnects >= 1 && {STATE}.state === 'publishing'", timeout=40)
        log = await page.evaluate("window.statusLog")
        assert countdowns(log, 1, "the connection was lost") or countdowns(log, 1, "the connection failed"), log
        assert live_node.hub.streams[stream] is held and held.ingest is not silent and silent.closed
        frames = held.pipeline.stats.frames_in
        await wait_until(lambda: held.pipeline.stats.frames_in >= frames + 30, timeout=20)
        await page.wait_for(f"{STATE}.framesDecoded >= 10", timeout=20)
        assert await page.evaluate(SAME_CAMERA), "the page opened the camera again"


@pytest.mark.parametrize("settings", [node_settings(relay={"grace_s": 20})])
async def test_webcam_page_takes_its_stream_back_from_the_slate(live_node, browser, tmp_path):
    """A node with a grace period holds the stream when the publisher drops: the page's viewer
    stays, and the page's new publisher takes the same stream over. Stop while the page waits
    to reconnect ends the waiting."""
    stream = stream_name("grace")
    page = await browser.new_page()
    async with evidence(tmp_path, webcam=page):
        await publish_from_page(live_node, page, stream)
        held = live_node.hub.streams[stream]
        viewers = set(held.viewers)
        dropped = held.ingest

        dropped.end()  # what the node does when the publisher's connection fails
        await wait_until(lambda: held.ingest is not dropped, timeout=10)
        await page.wait_for(f"{STATE}.reconnects === 1 && {STATE}.state === 'publishing'", timeout=20)
        assert live_node.hub.streams[stream] is held and held.ingest is not None and held.holding_since is None
        assert set(held.viewers) == viewers, "the page's processed stream should have stayed up"
        frames = held.pipeline.stats.frames_in
        await wait_until(lambda: held.pipeline.stats.frames_in >= frames + 30, timeout=20)
        assert countdowns(await page.evaluate("window.statusLog"), 1, "the node ended the session")
        assert await page.evaluate(SAME_CAMERA), "the page opened the camera again"

        # Dropped again; Stop during the 1.9 s wait: no new publisher comes.
        await page.evaluate("Math.random = () => 0.95")
        held.ingest.end()
        await page.wait_for(f"{STATE}.state === 'reconnecting'", timeout=10)
        await page.evaluate("document.getElementById('stop').click()")
        await page.wait_for(f"{STATE}.state === 'idle'", timeout=10)
        await asyncio.sleep(3)
        assert held.ingest is None and await page.evaluate(f"{STATE}.state") == "idle"
        assert await page.evaluate("document.getElementById('local').srcObject") is None


async def test_webcam_page_gives_up_when_another_publisher_took_the_stream(live_node, browser, tmp_path):
    stream = stream_name("taken")
    page = await browser.new_page()
    async with evidence(tmp_path, webcam=page):
        await publish_from_page(live_node, page, stream)
        await page.evaluate("Math.random = () => 0.99")  # the first retry waits 0.99 s: the rival is first

        async with live_node.http.delete(f"{live_node.url}/api/streams/{stream}") as response:
            assert response.status == 200
        rival = WhipPublisher(live_node.url, stream, live_node.http)
        await rival.publish(SyntheticVideoTrack(320, 240, fps=15))
        try:
            await page.wait_for(f"{STATE}.state === 'error'", timeout=15)
            status = await page.evaluate(STATUS)
            assert status.startswith("cannot reconnect:") and "already has a publisher" in status, status
            await asyncio.sleep(2.5)  # no second attempt (it would wait 1.98 s)
            log = await page.evaluate("window.statusLog")
            assert countdowns(log, 1, "the node ended the session") and not any("attempt 2" in t for t in log), log
            assert await page.evaluate("document.getElementById('local').srcObject") is None
            assert live_node.hub.streams[stream].viewers == {}  # the page left, the rival stayed
        finally:
            await rival.close()
        await wait_until(lambda: not open_sessions(), timeout=10)


async def test_reconnect_waits_grow_exponentially_with_full_jitter_and_a_cap(live_node, browser):
    page = await browser.new_page()
    await page.navigate(f"{live_node.url}/")
    waits = await page.evaluate("""import('/static/js/whip.js').then(({ retryDelayMs }) => ({
      top: [0, 1, 2, 3, 4, 5, 6, 10].map((n) => retryDelayMs(n, { random: () => 1 })),
      bottom: retryDelayMs(7, { random: () => 0 }),
      drawn: Array.from({ length: 200 }, () => retryDelayMs(3)),
    }))""")
    assert waits["top"] == [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    assert waits["bottom"] == 0
    assert all(0 <= w <= 8000 for w in waits["drawn"]) and len(set(waits["drawn"])) > 150  # spread, not fixed
