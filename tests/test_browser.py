"""The web pages in headless Chromium against the real node: the webcam page publishes its fake
camera and plays the processed stream back, the viewer page waits for a publisher and plays, and
the JavaScript delay stamp reads and writes exactly what the Python one does.

Chromium missing: skipped, except in CI (CI=true), where it is installed and must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from livegen.effects.base import Frame
from livegen.effects.overlays import OverlaysEffect
from livegen.testing.browser import Browser, BrowserError, JavaScriptError, Page, find_chromium
from livegen.testing.stamp import read_stamp, write_stamp
from tests.conftest import open_sessions, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

STATE = "window.livegen"

def frame_js(body: str) -> str:
    """A JS function of a <video> id that reads its current frame below the stamp rows into
    `data` (RGBA) and returns what `body` computes from it (null before the first frame)."""
    return """
((id) => {
  const video = document.getElementById(id);
  const [w, h] = [video.videoWidth, video.videoHeight];
  if (!w || !h) return null;
  const ctx = new OffscreenCanvas(w, h).getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0);
  const data = ctx.getImageData(0, 48, w, h - 48).data;
""" + body + "\n})\n"


# Mean chroma (max - min channel) and luma of a <video>'s current frame.
FRAME_COLOUR = frame_js("""
  let chroma = 0, luma = 0, n = 0;
  for (let i = 0; i < data.length; i += 4 * 7) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    chroma += Math.max(r, g, b) - Math.min(r, g, b);
    luma += 0.299 * r + 0.587 * g + 0.114 * b;
    n++;
  }
  return { chroma: chroma / n, luma: luma / n, width: w, height: h };""")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if find_chromium() is None:
        message = "Chromium is not installed (set LIVEGEN_CHROMIUM or install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the browser tests")
        pytest.skip(message)
    async with await Browser.launch() as launched:
        yield launched


@contextlib.asynccontextmanager
async def evidence(tmp_path: Path, **pages: Page) -> AsyncIterator[None]:
    """On a failure, screenshot every page and add what their consoles said to the error."""
    try:
        yield
    except (AssertionError, TimeoutError, BrowserError) as exc:
        notes = []
        for name, page in pages.items():
            shot = tmp_path / f"{name}.png"
            try:
                await page.screenshot(shot)
                where = f"screenshot {shot}"
            except BrowserError as error:
                where = f"no screenshot ({error})"
            try:
                state = await page.evaluate(f"JSON.stringify({STATE})")
            except BrowserError:
                state = "unreadable"
            notes.append(f"--- {name} page: {where}\nstate: {state}\n{page.report()}")
        raise AssertionError(f"{exc}\n" + "\n".join(notes)) from exc


def stream_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_webcam_page_publishes_and_shows_the_processed_stream(live_node, browser, tmp_path):
    stream = stream_name("cam")
    page = await browser.new_page()
    async with evidence(tmp_path, webcam=page):
        await page.navigate(f"{live_node.url}/?autostart=1&stream={stream}&preset=grayscale")
        await page.wait_for(f"{STATE}.state === 'publishing'", timeout=20)
        assert stream in live_node.hub.streams
        assert live_node.hub.streams[stream].preset == "grayscale"

        await page.wait_for(f"{STATE}.framesDecoded >= 30", timeout=40)
        published = await page.evaluate(f"[{STATE}.width, {STATE}.height]")
        processed = await page.evaluate(f"{FRAME_COLOUR}('processed')")
        camera = await page.evaluate(f"{FRAME_COLOUR}('local')")
        assert [processed["width"], processed["height"]] == published
        # Chromium's fake camera is saturated green; grayscale keeps its brightness, drops its colour.
        assert camera["chroma"] > 60, f"the fake camera is not colourful: {camera}"
        assert processed["chroma"] < 10, f"the processed picture still has colour: {processed}"
        assert abs(processed["luma"] - camera["luma"]) < 30, f"not the camera's picture: {processed} vs {camera}"

        # The stamp survives grayscale, so the page measures the camera→node→page delay.
        delay = await page.wait_for(f"{STATE}.delayMs", timeout=15)
        assert 0 < delay < 2000

        await page.evaluate("document.getElementById('stop').click()")
        await page.wait_for(f"{STATE}.state === 'idle'", timeout=10)
        await wait_until(lambda: stream not in live_node.hub.streams, timeout=10)
        async with live_node.http.get(f"{live_node.url}/api/streams/{stream}") as response:
            assert response.status == 404
        await wait_until(lambda: not open_sessions(), timeout=10)
        assert await page.evaluate("document.getElementById('local').srcObject") is None


# Mean RGB of a rectangle [x, y, w, h] of a <video>'s current frame.
REGION_RGB = """
((id, [x, y, w, h]) => {
  const video = document.getElementById(id);
  const ctx = new OffscreenCanvas(video.videoWidth, video.videoHeight).getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0);
  const data = ctx.getImageData(x, y, w, h).data;
  const sum = [0, 0, 0];
  for (let i = 0; i < data.length; i += 4) { sum[0] += data[i]; sum[1] += data[i + 1]; sum[2] += data[i + 2]; }
  return sum.map((v) => v / (data.length / 4));
})
"""
MAGENTA = (255, 0, 255)


def expected_lower_third(layer: dict, width: int, height: int, background) -> tuple[list[float], list[int]]:
    """What the node's overlay code draws for `layer` on a plain `background` picture: the mean
    RGB inside its band and the band as [x, y, w, h], inset by 6 px against codec blur."""
    picture = np.full((height, width, 3), background, np.uint8)
    frame = Frame(0, rgb=picture.copy())
    effect = OverlaysEffect.create({"layers": [layer]})
    effect.prepare(frame)
    effect.apply(frame)
    ys, xs = np.nonzero(np.any(frame.rgb != picture, axis=2))
    x0, y0, x1, y1 = xs.min() + 6, ys.min() + 6, xs.max() + 1 - 6, ys.max() + 1 - 6
    mean = frame.rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    return [float(v) for v in mean], [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]


MEAN_RGB = frame_js("""
  const sum = [0, 0, 0];
  let n = 0;
  for (let i = 0; i < data.length; i += 4 * 11) { sum[0] += data[i]; sum[1] += data[i + 1]; sum[2] += data[i + 2]; n++; }
  return sum.map((v) => v / n);""")


async def test_webcam_page_changes_background_and_overlays_live(live_node, browser, tmp_path):
    stream = stream_name("look")
    page = await browser.new_page()
    async with evidence(tmp_path, webcam=page):
        await page.navigate(f"{live_node.url}/?autostart=1&stream={stream}&preset=passthrough")
        await page.wait_for(f"{STATE}.state === 'publishing' && {STATE}.framesDecoded >= 5", timeout=40)

        # Background → a colour: the page sends segmentation + background as one PATCH. The fake
        # camera shows no person, so the whole picture takes the colour.
        await page.evaluate("""(() => {
          document.getElementById('bg-color').value = '#ff00ff';
          const mode = document.getElementById('bg-mode');
          mode.value = 'color';
          mode.dispatchEvent(new Event('change'));
        })()""")
        await wait_until(lambda: [e.name for e in live_node.hub.streams[stream].spec.effects][:2]
                         == ["segmentation", "background"], timeout=10)
        background = live_node.hub.streams[stream].spec.effects[1].params
        assert background["mode"] == "color" and background["color"] == "#ff00ff"
        await page.wait_for(f"(() => {{ const c = {MEAN_RGB}('processed'); "
                            "return c && c[0] > 200 && c[2] > 200 && c[1] < 60; })()", timeout=20)

        # A lower third typed into the page and applied reaches the chain, and the picture.
        await page.evaluate("""(() => {
          document.getElementById('ov-title').value = 'Ada Lovelace';
          document.getElementById('ov-subtitle').value = 'Analyst';
          document.getElementById('look-apply').click();
        })()""")

        def lower_third():
            effects = live_node.hub.streams[stream].spec.effects
            layers = [layer for e in effects if e.name == "overlays" for layer in e.params["layers"]]
            return [layer for layer in layers if layer["type"] == "lower_third"]

        await wait_until(lambda: lower_third() and lower_third()[0]["title"] == "Ada Lovelace", timeout=10)
        await page.wait_for(f"{STATE}.effects && {STATE}.effects.some((e) => e.name === 'overlays')", timeout=10)
        assert await page.evaluate(f"{STATE}.lastError") is None

        # The received picture has the band where the node's own overlay code draws it, in its
        # colours (H.264 moves them a little: region means within 30 of what the code draws,
        # against a distance of 200 from the magenta it covers); above the band, still magenta.
        width, height = await page.evaluate(f"[{STATE}.width, {STATE}.height]")
        expected, band = expected_lower_third(lower_third()[0], width, height, MAGENTA)
        above = [band[0], band[1] - band[3] - 24, band[2], band[3]]

        def off(rgb: list[float]) -> float:
            return max(abs(a - b) for a, b in zip(rgb, expected, strict=True))

        received = None
        for _ in range(100):  # up to 10 s for the change to reach the picture
            received = await page.evaluate(f"{REGION_RGB}('processed', {band})")
            if off(received) < 30:
                break
            await asyncio.sleep(0.1)
        assert off(received) < 30, f"no lower third in the received picture: {received} where the node draws {expected}"
        outside = await page.evaluate(f"{REGION_RGB}('processed', {above})")
        assert outside[0] > 200 and outside[2] > 200 and outside[1] < 60, f"not magenta above the band: {outside}"
        assert off(outside) > 100


async def test_viewer_page_waits_for_the_publisher_then_plays(live_node, browser, tmp_path):
    stream = stream_name("show")
    viewer = await browser.new_page()
    webcam = await browser.new_page()
    async with evidence(tmp_path, viewer=viewer, webcam=webcam):
        await viewer.navigate(f"{live_node.url}/watch/{stream}")
        await viewer.wait_for(f"{STATE}.state === 'waiting'", timeout=10)
        status = await viewer.evaluate("document.getElementById('status').textContent")
        assert "waiting for publisher" in status

        await webcam.navigate(f"{live_node.url}/?autostart=1&stream={stream}&preset=passthrough")
        await viewer.wait_for(f"{STATE}.state === 'playing'", timeout=30)
        await viewer.wait_for(f"{STATE}.framesDecoded >= 30", timeout=40)
        await webcam.wait_for(f"{STATE}.state === 'publishing'", timeout=10)
        assert await viewer.evaluate(f"{STATE}.width") == await webcam.evaluate(f"{STATE}.width")
        assert len(live_node.hub.streams[stream].viewers) == 2  # the viewer page and the webcam page

        # The publisher leaves: the viewer notices and waits for the next one.
        await webcam.evaluate("document.getElementById('stop').click()")
        await viewer.wait_for(f"{STATE}.state === 'waiting'", timeout=15)
        await wait_until(lambda: stream not in live_node.hub.streams, timeout=10)


async def test_javascript_stamp_matches_the_python_stamp(live_node, browser, tmp_path):
    page = await browser.new_page()
    async with evidence(tmp_path, page=page):
        await page.navigate(f"{live_node.url}/")
        await page.evaluate("import('/static/js/stamp.js').then((m) => { window.stamp = m; })")
        width, height = 640, 48
        for value in (0, 1, 0xA5A5A5, 0xFFFFFF, 2**24 + 1234, 987654321):
            # JavaScript writes, Python reads.
            pixels = await page.evaluate(
                f"""(() => {{
                  const ctx = new OffscreenCanvas({width}, {height}).getContext("2d");
                  ctx.fillStyle = "#808080";
                  ctx.fillRect(0, 0, {width}, {height});
                  stamp.writeStamp(ctx, {value});
                  return Array.from(ctx.getImageData(0, 0, {width}, {height}).data);
                }})()"""
            )
            rgba = np.array(pixels, dtype=np.uint8).reshape(height, width, 4)
            assert read_stamp(rgba[:, :, :3]) == value % 2**24

            # Python writes, JavaScript reads (through the same canvas path the page uses).
            frame = np.full((height, width, 3), 128, dtype=np.uint8)
            write_stamp(frame, value)
            rgba = np.dstack([frame, np.full((height, width), 255, dtype=np.uint8)])
            read = await page.evaluate(
                f"""(() => {{
                  const data = new Uint8ClampedArray({rgba.ravel().tolist()});
                  const ctx = new OffscreenCanvas({width}, {height}).getContext("2d");
                  ctx.putImageData(new ImageData(data, {width}, {height}), 0, 0);
                  return new stamp.StampReader().read(ctx.canvas, {width}, {height});
                }})()"""
            )
            assert read == value % 2**24

        # A frame without a stamp, or with a corrupted one, reads as nothing on both sides.
        frame = np.full((height, width, 3), 128, dtype=np.uint8)
        write_stamp(frame, 0x123456)
        frame[16:32, 16 + 5 * 16 : 16 + 6 * 16] = 255 - frame[20, 16 + 5 * 16]  # flip one data bit
        assert read_stamp(frame) is None
        js_read = await page.evaluate(
            f"""(() => {{
              const rgb = {frame.ravel().tolist()};
              const data = new Uint8ClampedArray({width} * {height} * 4);
              for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) data.set([rgb[i], rgb[i + 1], rgb[i + 2], 255], j);
              const ctx = new OffscreenCanvas({width}, {height}).getContext("2d");
              ctx.putImageData(new ImageData(data, {width}, {height}), 0, 0);
              const reader = new stamp.StampReader();
              const blank = new OffscreenCanvas({width}, {height});
              return [reader.read(ctx.canvas, {width}, {height}), reader.read(blank, {width}, {height})];
            }})()"""
        )
        assert js_read == [None, None]
        # The delay across the 2^24 wrap.
        assert await page.evaluate(f"stamp.elapsedMs({2**24 - 10}, {2**24 + 5})") == 15


async def test_driver_reports_page_errors_and_cleans_up(browser):
    page = await browser.new_page()
    await page.evaluate("console.error('camera on fire')")
    with pytest.raises(JavaScriptError, match="no such thing"):
        await page.evaluate("Promise.reject(new Error('no such thing'))")
    with pytest.raises(TimeoutError, match="window.never"):
        await page.wait_for("window.never", timeout=0.5)
    assert await page.evaluate("new Promise((ok) => setTimeout(() => ok({ a: [1, 'b'] }), 10))") == {"a": [1, "b"]}
    assert "[error] camera on fire" in page.problems()

    profile = browser.profile_dir
    assert browser.running and profile.is_dir()
    await browser.close()
    assert not browser.running and not profile.exists()
    with pytest.raises(BrowserError):
        await page.evaluate("1")
