"""The operator routes and the /ops page: the node at a glance, ending a publisher or one viewer,
switching a stream's preset and prompt from the page (headless Chromium)."""

from __future__ import annotations

import asyncio
import json

import pytest

from livegen.api.metrics import METRICS
from livegen.hub.stream import public_id
from livegen.observability.gpu import NvmlGpus
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, open_sessions, wait_until
from tests.test_bad_input import request
from tests.test_browser import browser, evidence  # noqa: F401 (the fixture)
from tests.test_metrics import FakeNvml

OPERATOR, PUBLISH, VIEW = "op-secret-ops", "pub-secret-ops", "view-secret-ops"
TOKENS = node_settings(auth={"publish_tokens": {"*": PUBLISH}, "viewer_tokens": {"*": VIEW},
                             "operator_token": OPERATOR})


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def test_node_reports_device_gpus_and_diffusion(live_node):
    code, _, text = await request(live_node, "GET", "/api/node")
    assert code == 200, text
    node = json.loads(text)
    assert node["device"] == "cpu" and node["worker_running"] is True
    assert node["streams"] == 0 and node["max_streams"] >= 1 and node["uptime_s"] >= 0
    assert node["gpus"] == []  # no NVIDIA here: an empty panel, no error
    assert node["diffusion"]["available"] is False and node["diffusion"]["reason"]

    live_node.app[METRICS].gpus = NvmlGpus.open(FakeNvml())  # what a node with one H100 reads
    code, _, text = await request(live_node, "GET", "/api/node")
    assert code == 200, text
    assert json.loads(text)["gpus"] == [{
        "index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1234", "utilization": 0.37,
        "memory_used_bytes": 3 * 2**30, "memory_total_bytes": 80 * 2**30, "temperature_celsius": 54,
        "power_watts": 123.456, "encoder_utilization": None,  # not supported by that card: no error
    }]


async def test_ending_one_viewer_leaves_the_others_and_ending_the_stream_ends_all(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset="grayscale")
    await publisher.publish(SyntheticVideoTrack(320, 240))
    viewers = [WhepViewer(live_node.url, "cam", live_node.http) for _ in range(2)]
    for viewer in viewers:
        await viewer.watch()
        await (await viewer.video()).recv()
    code, _, text = await request(live_node, "GET", "/api/streams/cam")
    sessions = json.loads(text)["viewer_sessions"]
    assert len(sessions) == 2 and {"id", "codec", "since"} <= set(sessions[0])

    gone, kept = sessions[0]["id"], sessions[1]["id"]
    code, _, text = await request(live_node, "DELETE", f"/api/streams/cam/viewers/{gone}")
    assert code == 200, text
    # the API shows public ids, not the sessions' secret URLs
    assert {public_id(s) for s in live_node.hub.streams["cam"].viewers} == {kept}
    survivor = next(v for v in viewers if v.location and public_id(v.location.rsplit("/", 1)[1]) == kept)
    for _ in range(5):  # the other viewer keeps receiving
        await asyncio.wait_for((await survivor.video()).recv(), 5)

    code, _, _ = await request(live_node, "DELETE", f"/api/streams/cam/viewers/{gone}")
    assert code == 404
    code, _, _ = await request(live_node, "DELETE", "/api/streams/nobody")
    assert code == 404
    code, _, text = await request(live_node, "DELETE", "/api/streams/cam")
    assert code == 200, text
    assert "cam" not in live_node.hub.streams
    await wait_until(lambda: not open_sessions(), timeout=10)
    for viewer in viewers:
        await viewer.close()
    await publisher.close()


@pytest.mark.parametrize("settings", [TOKENS])
async def test_operator_routes_need_the_operator_token(live_node, settings):
    for token, status in ((None, 401), ("wrong", 401), (VIEW, 403), (OPERATOR, 200)):
        code, _, _ = await request(live_node, "GET", "/api/node", headers=bearer(token))
        assert code == status, token
    publisher = WhipPublisher(live_node.url, "cam", live_node.http, token=PUBLISH)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    for token, status in ((None, 401), (VIEW, 403)):
        code, _, _ = await request(live_node, "DELETE", "/api/streams/cam", headers=bearer(token))
        assert code == status
    for token, status in ((None, 401), (VIEW, 403), (OPERATOR, 404)):  # the operator gets past auth to the 404
        code, _, _ = await request(live_node, "DELETE", "/api/streams/cam/viewers/nobody", headers=bearer(token))
        assert code == status, token
    code, _, _ = await request(live_node, "DELETE", "/api/streams/bad%20name", headers=bearer(OPERATOR))
    assert code == 400
    assert "cam" in live_node.hub.streams
    code, _, _ = await request(live_node, "DELETE", "/api/streams/cam", headers=bearer(OPERATOR))
    assert code == 200 and "cam" not in live_node.hub.streams
    await publisher.close()


@pytest.mark.browser
@pytest.mark.timeout(90)
@pytest.mark.parametrize("settings", [TOKENS])
async def test_ops_page_shows_controls_and_ends_streams(live_node, settings, browser, tmp_path):  # noqa: F811
    publisher = WhipPublisher(live_node.url, "show", live_node.http, preset="grayscale", token=PUBLISH)
    await publisher.publish(SyntheticVideoTrack(320, 240))
    viewer = WhepViewer(live_node.url, "show", live_node.http, token=VIEW)
    await viewer.watch()
    await (await viewer.video()).recv()
    page = await browser.new_page()
    ops = "window.livegenOps"
    async with evidence(tmp_path, ops=page):
        await page.navigate(f"{live_node.url}/ops")
        await page.wait_for(f"{ops}.state === 'error'", timeout=10)  # no token: refused, and says so
        assert "operator token" in await page.evaluate("document.getElementById('status').textContent")

        await page.navigate(f"{live_node.url}/ops?token={OPERATOR}")
        card = "document.querySelector('article[data-stream=\"show\"]')"
        await page.wait_for(f"{card} !== null && {ops}.streams[0]?.fps_out > 0", timeout=20)
        assert await page.evaluate("location.href") == f"{live_node.url}/ops"  # not left in the history
        await page.wait_for(f"Number({card}.querySelector('canvas.spark').dataset.points) >= 2", timeout=10)
        assert await page.evaluate("document.getElementById('gpus').textContent") == "no NVIDIA GPU on this node"
        assert await page.evaluate(f"{card}.querySelector('label:has(input)').hidden")  # no prompt to change

        live_node.app[METRICS].gpus = NvmlGpus.open(FakeNvml())
        gpus = "document.getElementById('gpus')"
        await page.wait_for(f"{gpus}.textContent.includes('NVIDIA H100')", timeout=10)
        figures = await page.evaluate(f"[...{gpus}.querySelectorAll('dd')].map((d) => d.textContent)")
        assert figures == ["37 %", "3.0 / 80 GiB", "54 °C", "123 W", "—"]

        # end the one viewer from the page
        await page.wait_for(f"{card}.querySelector('li[data-viewer] button') !== null", timeout=10)
        await page.evaluate(f"{card}.querySelector('li[data-viewer] button').click()")
        await wait_until(lambda: not live_node.hub.streams["show"].viewers, timeout=10)
        await page.wait_for(f"{card}.querySelector('li[data-viewer]') === null", timeout=10)

        # switch the preset from the page
        assert await page.evaluate(f"{card}.querySelector('select').getAttribute('aria-label')") == "preset of show"
        await page.evaluate(f"""(() => {{
          const select = {card}.querySelector('select');
          select.value = 'generated';
          select.dispatchEvent(new Event('change'));
        }})()""")
        await wait_until(lambda: live_node.hub.streams["show"].preset == "generated", timeout=10)

        # a chain with a prompt shows the field; a refused prompt is explained on the card
        await page.wait_for(f"!{card}.querySelector('label:has(input)').hidden", timeout=10)
        enter = "dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}))"
        await page.evaluate(f"(() => {{ const i = {card}.querySelector('input'); i.value = ' '; i.{enter}; }})()")
        await page.wait_for(f"{card}.querySelector('.error-inline').textContent.includes('prompt')", timeout=10)
        await page.evaluate(f"(() => {{ const i = {card}.querySelector('input'); i.value = 'a beach'; i.{enter}; }})()")
        await wait_until(lambda: live_node.hub.streams["show"].spec.effects[-1].params["prompt"] == "a beach",
                         timeout=10)
        assert await page.evaluate(f"{card}.querySelector('.error-inline').textContent") == ""

        # end the stream from the page
        await page.evaluate(f"window.confirm = () => true; {card}.querySelector('button.end').click()")
        await wait_until(lambda: "show" not in live_node.hub.streams, timeout=10)
        await page.wait_for(f"{card} === null", timeout=10)
        assert await page.evaluate(f"{ops}.lastError") is None
    await viewer.close()
    await publisher.close()


@pytest.mark.browser
@pytest.mark.timeout(90)
@pytest.mark.parametrize("settings", [node_settings(
    auth={"publish_tokens": {"*": PUBLISH}, "operator_token": OPERATOR},
    relay={"backoff_base_s": 0.2, "backoff_cap_s": 0.5},
)])
async def test_ops_page_adds_and_stops_outputs_and_recordings(live_node, settings, browser, tmp_path):  # noqa: F811
    publisher = WhipPublisher(live_node.url, "show", live_node.http, preset="passthrough", token=PUBLISH)
    await publisher.publish(SyntheticVideoTrack(320, 240))
    page = await browser.new_page()
    async with evidence(tmp_path, ops=page):
        await page.navigate(f"{live_node.url}/ops#token={OPERATOR}")  # a fragment never reaches the server
        card = "document.querySelector('article[data-stream=\"show\"]')"
        await page.wait_for(f"{card} !== null", timeout=20)
        assert OPERATOR not in await page.evaluate("location.href")

        # an RTMP output to a port nobody listens on: added from the form, shown retrying, key hidden
        await page.evaluate(f"""(() => {{
          const form = {card}.querySelector('form.add-output');
          form.querySelector('input[type=url]').value = 'rtmp://127.0.0.1:1/live/SECRETKEY';
          form.requestSubmit();
        }})()""")
        outputs = f"{card}.querySelector('ul.outputs:not(.recordings)')"
        await page.wait_for(f"{outputs}.textContent.includes('retrying')", timeout=15)
        assert "SECRETKEY" not in await page.evaluate(f"{card}.textContent")
        assert len(live_node.hub.streams["show"].outputs) == 1

        # a refused URL is explained on the card
        await page.evaluate(f"""(() => {{
          const form = {card}.querySelector('form.add-output');
          form.querySelector('input[type=url]').value = 'srt://127.0.0.1:9000';
          form.requestSubmit();
        }})()""")
        await page.wait_for(f"{card}.querySelector('.error-inline').textContent.includes('libsrt')", timeout=10)

        # a recording from the button, then stopped; the output stopped too
        await page.evaluate(f"{card}.querySelector('button.record').click()")
        recordings = f"{card}.querySelector('ul.recordings')"
        await page.wait_for(f"{recordings}.querySelector('li[data-output]') !== null", timeout=15)
        await page.evaluate(f"{recordings}.querySelector('li[data-output] button').click()")
        await page.evaluate(f"{outputs}.querySelector('li[data-output] button').click()")
        await wait_until(lambda: len(live_node.hub.streams["show"].outputs) == 0, timeout=15)
        await page.wait_for(f"{outputs}.querySelector('li') === null && {recordings}.querySelector('li') === null", timeout=10)
    await publisher.close()
