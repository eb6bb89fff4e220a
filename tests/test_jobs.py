"""File jobs through the real node: `POST /api/jobs` with an uploaded video (or an object key),
idempotency, cancel, bad input, output download with Range, tokens, signed webhooks with retries
against a real receiver, object storage (a real S3 API server), and a node killed with SIGKILL
mid-job that finds its jobs again when it starts on the same data folder."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from botocore.exceptions import ClientError, ReadTimeoutError

from livegen.api.jobs import JOBS
from livegen.bench.node import NodeProcess
from livegen.config import Settings
from livegen.files.process import FileError
from livegen.jobs.failures import error_kind
from livegen.jobs.store import JobStore
from livegen.jobs.webhooks import NotPublic, PublicResolver, check_reachable, is_public
from tests.conftest import media_threads, node_settings, start_node, wait_until
from tests.s3_server import FAKE_CREDENTIALS, MotoS3Server, moto_missing
from tests.test_browser import browser, evidence  # noqa: F401 (the fixture)

SECRET = "whsec-test-0123456789"
OPERATOR = "operator-token-1"
TOKEN_A = "publish-token-a"
TOKEN_B = "publish-token-b"
BUCKET = "livegen-jobs"
LONG_PRESET = "grayscale"
LIGHT_PRESETS = ("passthrough", "grayscale", "edges")
"""The presets these nodes load: light ones, so that a node starts quickly."""


def make_clip(seconds: float, width: int = 320, height: int = 240, fps: int = 30) -> bytes:
    """An H.264 MP4 whose every frame differs (a moving bar over a changing red)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(round(seconds * fps)):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[..., 0] = (index * 7) % 256
            rgb[:, (index * 3) % width, 1] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def video_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def short_clip() -> bytes:
    return make_clip(1.0)


@pytest.fixture(scope="module")
def long_clip() -> bytes:
    """Long enough to be caught running (450 frames: a few seconds on a CPU)."""
    return make_clip(15.0)


def default_presets_dir() -> Path:
    return Settings().presets_dir()


def light_presets(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in LIGHT_PRESETS:
        (folder / f"{name}.yaml").write_text((default_presets_dir() / f"{name}.yaml").read_text())
    return folder


class Node:
    """An in-process node and a client for it."""

    def __init__(self, url: str, http: aiohttp.ClientSession, app: web.Application, data_dir: Path):
        self.url, self.http, self.app, self.data_dir = url, http, app, data_dir

    async def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any, Any]:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url + path, headers=headers, **kw) as response:
            raw = await response.read()
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = raw
            return response.status, response.headers, body

    async def upload(self, data: bytes, token: str | None = None, content_type: str = "video/mp4") -> str:
        status, _, body = await self.call("POST", "/api/assets", token, data=data, headers={"Content-Type": content_type})
        assert status == 201, body
        return body["ref"]

    async def submit(self, body: dict[str, Any], token: str | None = None, key: str | None = None) -> tuple[int, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        status, _, answer = await self.call("POST", "/api/jobs", token, json=body, headers=headers)
        return status, answer

    async def job(self, job_id: str, token: str | None = None) -> dict[str, Any]:
        status, _, body = await self.call("GET", f"/api/jobs/{job_id}", token)
        assert status == 200, body
        return body

    async def wait(self, job_id: str, predicate, timeout: float = 30.0, token: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id, token)
            if predicate(job):
                return job
            assert time.monotonic() < deadline, f"job never got there: {job}"
            await asyncio.sleep(0.05)


def ended(job: dict[str, Any]) -> bool:
    return job["state"] in ("succeeded", "failed", "canceled")


async def open_node(tmp_path: Path, **sections: dict[str, Any]) -> tuple[web.AppRunner, Node]:
    jobs = {"data_dir": str(tmp_path / "jobs"), "webhook_secret": SECRET, "webhook_allow_private": True,
            **sections.pop("jobs", {})}
    server = {"uploads_dir": str(tmp_path / "uploads"), **sections.pop("server", {})}
    engine = {"presets_dir": str(light_presets(tmp_path / "presets"))}
    settings = node_settings(jobs=jobs, server=server, engine=engine, **sections)
    runner, url = await start_node(settings)
    http = aiohttp.ClientSession()
    return runner, Node(url, http, runner.app, Path(jobs["data_dir"]))


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    runner, node = await open_node(tmp_path, jobs={"webhook_backoff_base_s": 0.1, "webhook_backoff_cap_s": 0.5})
    yield node
    await node.http.close()
    await runner.cleanup()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("livegen-job")]


async def test_a_job_runs_once_per_idempotency_key_and_its_output_downloads_with_range(node: Node, short_clip: bytes) -> None:
    ref = await node.upload(short_clip)
    body = {"input": ref, "preset": "grayscale"}
    status, first = await node.submit(body, key="order-17")
    assert status == 202 and first["state"] == "queued" and first["id"] and first["created"]
    status, again = await node.submit({"preset": "grayscale", "input": ref}, key="order-17")  # same body, keys reordered
    assert status == 200 and again["id"] == first["id"]
    status, conflict = await node.submit({"input": ref, "preset": "edges"}, key="order-17")
    assert status == 422 and conflict["errors"][0]["field"] == "Idempotency-Key", conflict

    done = await node.wait(first["id"], ended)
    assert done["state"] == "succeeded", done
    assert done["progress"] == 1.0 and done["frames_done"] == done["frames_total"] == 30
    assert done["attempts"] == 1 and done["error"] is None
    status, _, listed = await node.call("GET", "/api/jobs?state=succeeded")
    assert status == 200 and [j["id"] for j in listed["jobs"]] == [first["id"]]
    status, again = await node.submit(body, key="order-17")  # a repeat after it ran: the same, finished job
    assert status == 200 and again["state"] == "succeeded"

    async with node.http.get(f"{node.url}/api/jobs/{first['id']}/output") as response:
        assert response.status == 200 and response.headers["Content-Type"] == "video/mp4"
        whole = await response.read()
    assert video_frames(whole) == 30
    frame = av.open(io.BytesIO(whole)).decode(video=0).__next__().to_ndarray(format="rgb24").astype(int)
    assert np.abs(frame[..., 0] - frame[..., 1]).max() <= 12  # grayscale: the channels agree
    async with node.http.get(f"{node.url}/api/jobs/{first['id']}/output", headers={"Range": "bytes=4-11"}) as response:
        assert response.status == 206 and await response.read() == whole[4:12]  # "ftyp" + brand

    status, _, raw = await node.call("GET", "/metrics")
    metrics = raw.decode()
    assert "livegen_jobs_queue_depth 0.0" in metrics
    assert 'livegen_jobs{state="succeeded"} 1.0' in metrics
    assert 'livegen_job_duration_seconds_count{state="succeeded"} 1.0' in metrics


async def test_bad_requests_name_the_field(node: Node, short_clip: bytes) -> None:
    ref = await node.upload(short_clip)
    image = io.BytesIO()
    av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24").to_image().save(image, "PNG")
    image_ref = await node.upload(image.getvalue(), content_type="image/png")
    cases = [
        ({"preset": "grayscale"}, "input"),
        ({"input": "upload:" + "0" * 32}, "input"),
        ({"input": image_ref}, "input"),
        ({"input": "videos/clip.mp4"}, "input"),  # an object key, but this node has no object storage
        ({"input": ref, "preset": "no-such-preset"}, "preset"),
        ({"input": ref, "params": {"stylize": {"prompt": "x"}}}, "params.stylize"),
        ({"input": ref, "webhook_url": "ftp://example.com/hook"}, "webhook_url"),
        ({"input": ref, "webhook_url": "not a url"}, "webhook_url"),
        ({"input": ref, "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        status, answer = await node.submit(body)
        assert status == 422, (body, answer)
        assert field in [e["field"] for e in answer.get("errors", [])], (body, answer)
    status, _, answer = await node.call("POST", "/api/jobs", data=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400, answer
    status, _, answer = await node.call("POST", "/api/jobs", data=b"input=x", headers={"Content-Type": "text/plain"})
    assert status == 415, answer
    status, answer = await node.submit({"input": ref}, key="has space")
    assert status == 400 and "Idempotency-Key" in answer["detail"]
    for path, expected in (("/api/jobs/0123456789abcdef", 404), ("/api/jobs/nope", 400), ("/api/jobs?state=done", 400),
                           ("/api/jobs?limit=0", 400)):
        status, _, answer = await node.call("GET", path)
        assert status == expected, (path, answer)
    status, _, listed = await node.call("GET", "/api/jobs")
    assert listed == {"jobs": [], "next": None}  # nothing was accepted
    assert not node.data_dir.exists()  # and a node that never took a job writes nothing


async def test_cancel_stops_a_running_job_and_leaves_no_output(node: Node, long_clip: bytes) -> None:
    ref = await node.upload(long_clip)
    status, job = await node.submit({"input": ref, "preset": LONG_PRESET})
    assert status == 202
    running = await node.wait(job["id"], lambda j: j["state"] == "running" and j["frames_done"] > 0)
    assert 0 < running["progress"] < 1 and running["frames_total"] == 450 and running["eta_s"] is not None
    started = time.monotonic()
    status, _, canceled = await node.call("DELETE", f"/api/jobs/{job['id']}")
    assert status == 200 and canceled["state"] == "canceled", canceled
    assert time.monotonic() - started < 1.5  # the answer comes once the job has stopped
    assert not (node.data_dir / job["id"]).exists()  # no partial output, no folder
    assert not node.app[JOBS]._active
    status, _, _ = await node.call("GET", f"/api/jobs/{job['id']}/output")
    assert status == 409
    assert (await node.job(job["id"]))["state"] == "canceled"
    status, _, again = await node.call("DELETE", f"/api/jobs/{job['id']}")
    assert status == 200 and again["state"] == "canceled"  # idempotent

    status, queued = await node.submit({"input": ref, "preset": LONG_PRESET})
    status, second = await node.submit({"input": ref, "preset": "edges"})  # waits behind the first (concurrency 1)
    await node.wait(queued["id"], lambda j: j["state"] == "running")
    status, _, canceled = await node.call("DELETE", f"/api/jobs/{second['id']}")
    assert status == 200 and canceled["state"] == "canceled" and canceled["attempts"] == 0
    await node.call("DELETE", f"/api/jobs/{queued['id']}")
    listed = (await node.call("GET", "/api/jobs?limit=2"))[2]
    assert [j["id"] for j in listed["jobs"]] == [second["id"], queued["id"]] and listed["next"] is not None
    older = (await node.call("GET", f"/api/jobs?limit=2&before={listed['next']}"))[2]
    assert [j["id"] for j in older["jobs"]] == [job["id"]] and older["next"] is None


async def test_a_stopping_node_puts_its_running_job_back_in_the_queue(tmp_path: Path, long_clip: bytes) -> None:
    runner, node = await open_node(tmp_path)
    try:
        ref = await node.upload(long_clip)
        _, job = await node.submit({"input": ref, "preset": LONG_PRESET})
        await node.wait(job["id"], lambda j: j["state"] == "running" and j["frames_done"] > 0)
    finally:
        await node.http.close()
        started = time.monotonic()
        await runner.cleanup()  # what SIGTERM does
    assert time.monotonic() - started < 5
    await wait_until(lambda: not [name for name in media_threads() if "job" in name], timeout=5)
    store = JobStore(tmp_path / "jobs")
    await store.open()
    try:
        stopped = await store.get(job["id"])
    finally:
        await store.close()
    assert stopped is not None and stopped.state == "queued" and stopped.attempts == 0  # not the job's fault
    assert stopped.error_kind is None
    assert not [p for p in (tmp_path / "jobs" / job["id"]).glob("*")]  # no partial output left


class Receiver:
    """A webhook endpoint that answers from a script and records every request."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]]):
        self.answers = answers
        self.requests: list[tuple[float, dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((time.monotonic(), dict(request.headers), await request.read()))
        status, headers = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")


@pytest.fixture
async def receiver_url() -> AsyncIterator[tuple[str, dict[str, Receiver]]]:
    receivers: dict[str, Receiver] = {}
    app = web.Application()

    async def route(request: web.Request) -> web.Response:
        return await receivers[request.match_info["name"]].handle(request)

    app.router.add_post("/hooks/{name}", route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hooks", receivers
    await runner.cleanup()


def verified(headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does with the secret: HMAC-SHA256 over "<t>.<body>", in constant time."""
    fields = dict(part.split("=", 1) for part in headers["Livegen-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 60


async def test_webhooks_are_signed_retried_with_backoff_and_not_retried_on_4xx(node: Node, short_clip: bytes, receiver_url) -> None:
    base, receivers = receiver_url
    receivers["flaky"] = Receiver([(500, {}), (429, {"Retry-After": "1"}), (204, {})])
    receivers["gone"] = Receiver([(410, {})])
    ref = await node.upload(short_clip)
    _, flaky = await node.submit({"input": ref, "webhook_url": f"{base}/flaky?account=7"})
    _, gone = await node.submit({"input": ref, "preset": "grayscale", "webhook_url": f"{base}/gone"})
    await wait_until(lambda: len(receivers["flaky"].requests) == 3 and receivers["gone"].requests, timeout=20)

    tries = receivers["flaky"].requests
    assert all(verified(headers, body) for _, headers, body in tries)
    assert len({body for _, _, body in tries}) == 1  # the same bytes every time
    event = json.loads(tries[0][2])
    assert event["type"] == "job.succeeded" and event["job"]["id"] == flaky["id"] and event["job"]["state"] == "succeeded"
    assert {headers["Livegen-Event-Id"] for _, headers, _ in tries} == {event["id"]}
    assert tries[2][0] - tries[1][0] >= 0.95  # Retry-After: 1 was honoured
    assert tries[1][0] - tries[0][0] <= 0.9  # the 500 was retried after the backoff (base 0.1 s)
    job = await node.wait(flaky["id"], lambda j: j["webhook"]["deliveries"][0]["state"] == "delivered")
    [delivery] = job["webhook"]["deliveries"]
    assert delivery["attempts"] == 3 and delivery["last_status"] == 204 and delivery["event_id"] == event["id"]

    await asyncio.sleep(0.6)  # longer than any backoff: a 410 is not tried again
    assert len(receivers["gone"].requests) == 1
    [refused] = (await node.job(gone["id"]))["webhook"]["deliveries"]
    assert refused["state"] == "failed" and refused["attempts"] == 1 and refused["last_status"] == 410
    assert verified(receivers["gone"].requests[0][1], receivers["gone"].requests[0][2])


async def test_a_pending_webhook_is_delivered_by_the_next_run_of_the_node(tmp_path: Path, short_clip: bytes, receiver_url) -> None:
    base, receivers = receiver_url
    receivers["later"] = Receiver([(429, {"Retry-After": "2"}), (200, {})])
    runner, node = await open_node(tmp_path)
    try:
        _, job = await node.submit({"input": await node.upload(short_clip), "webhook_url": f"{base}/later"})
        await wait_until(lambda: receivers["later"].requests, timeout=20)
        await node.wait(job["id"], lambda j: j["webhook"]["deliveries"][0]["attempts"] == 1)
    finally:
        await node.http.close()
        await runner.cleanup()
    runner, node = await open_node(tmp_path)  # the same data folder
    try:
        await wait_until(lambda: len(receivers["later"].requests) == 2, timeout=10)
        [first, second] = receivers["later"].requests
        assert second[0] - first[0] >= 1.9  # the stored next try, after Retry-After: 2
        assert first[2] == second[2] and verified(second[1], second[2])
        [delivery] = (await node.job(job["id"]))["webhook"]["deliveries"]
        assert delivery["state"] == "delivered" and delivery["attempts"] == 2
    finally:
        await node.http.close()
        await runner.cleanup()


async def test_webhooks_reach_only_public_addresses_unless_allowed(tmp_path: Path, short_clip: bytes, receiver_url) -> None:
    base, receivers = receiver_url
    port = urlsplit(base).port
    receivers["inside"] = Receiver([(429, {"Retry-After": "2"}), (200, {})])
    runner, node = await open_node(tmp_path, jobs={"webhook_allow_private": False})
    try:
        ref = await node.upload(short_clip)
        for url in (f"{base}/inside", f"http://localhost:{port}/hooks/inside", "http://[::1]/hook",
                    "http://169.254.169.254/latest/meta-data", "http://10.1.2.3/hook", "http://[::ffff:192.168.1.1]/hook",
                    "http://0.0.0.0/hook", "http://100.64.0.1/hook"):
            status, answer = await node.submit({"input": ref, "webhook_url": url})
            assert status == 422 and answer["errors"][0]["field"] == "webhook_url", (url, answer)
            assert "public address" in answer["detail"], answer
        status, _, listed = await node.call("GET", "/api/jobs")
        assert listed["jobs"] == []
    finally:
        await node.http.close()
        await runner.cleanup()
    # a job accepted while private receivers were allowed, its webhook still pending ...
    runner, node = await open_node(tmp_path)
    try:
        _, job = await node.submit({"input": await node.upload(short_clip), "webhook_url": f"{base}/inside"})
        await node.wait(job["id"], lambda j: j["webhook"]["deliveries"] and j["webhook"]["deliveries"][0]["attempts"] == 1)
    finally:
        await node.http.close()
        await runner.cleanup()
    # ... is not sent by a node that no longer allows them: failed, not retried
    runner, node = await open_node(tmp_path, jobs={"webhook_allow_private": False})
    try:
        done = await node.wait(job["id"], lambda j: j["webhook"]["deliveries"][0]["state"] != "pending", timeout=10)
        [delivery] = done["webhook"]["deliveries"]
        assert delivery["state"] == "failed" and "not a public address" in delivery["last_error"], delivery
        await asyncio.sleep(2.5)  # past the first answer's Retry-After
        assert len(receivers["inside"].requests) == 1
    finally:
        await node.http.close()
        await runner.cleanup()


async def test_jobs_that_ended_are_deleted_after_the_retention_time(tmp_path: Path, short_clip: bytes, receiver_url) -> None:
    base, receivers = receiver_url
    receivers["slow"] = Receiver([(429, {"Retry-After": "6"}), (200, {})])
    runner, node = await open_node(tmp_path, jobs={"retention_s": 1})
    try:
        ref = await node.upload(short_clip)
        status, plain = await node.submit({"input": ref, "preset": "grayscale"}, key="nightly")
        assert status == 202
        _, hooked = await node.submit({"input": ref, "preset": "grayscale", "webhook_url": f"{base}/slow"})
        assert (await node.wait(plain["id"], ended))["state"] == "succeeded"
        assert (node.data_dir / plain["id"]).is_dir()
        await wait_until(lambda: not (node.data_dir / plain["id"]).exists(), timeout=10)
        status, _, _ = await node.call("GET", f"/api/jobs/{plain['id']}")
        assert status == 404
        # a job whose webhook is still being tried is kept until it is through
        await node.wait(hooked["id"], lambda j: ended(j) and j["webhook"]["deliveries"]
                        and j["webhook"]["deliveries"][0]["attempts"] == 1)
        await asyncio.sleep(2.5)  # ended well over the retention time ago; the next try is at 6 s
        kept = await node.job(hooked["id"])
        assert kept["webhook"]["deliveries"][0]["state"] == "pending" and (node.data_dir / hooked["id"]).is_dir()
        await wait_until(lambda: len(receivers["slow"].requests) == 2, timeout=15)
        await wait_until(lambda: not (node.data_dir / hooked["id"]).exists(), timeout=10)
        status, _, _ = await node.call("GET", f"/api/jobs/{hooked['id']}")
        assert status == 404
        # the deleted job's idempotency key makes a new job
        status, again = await node.submit({"input": ref, "preset": "grayscale"}, key="nightly")
        assert status == 202 and again["id"] != plain["id"]
    finally:
        await node.http.close()
        await runner.cleanup()


async def test_the_webhook_resolver_keeps_public_addresses_only() -> None:
    assert is_public("93.184.216.34") and is_public("2606:2800:220:1::1")
    for address in ("127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.0.1", "169.254.169.254", "100.64.0.1",
                    "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1", "ff02::1", "nonsense"):
        assert not is_public(address), address
    resolver = PublicResolver()
    try:
        with pytest.raises(NotPublic):  # a name that resolves to loopback only: never connected to
            await resolver.resolve("localhost", 80, socket.AF_UNSPEC)
    finally:
        await resolver.close()
    await check_reachable("http://localhost/hook", allow_private=True)  # allowed: nothing is checked


async def test_tokens_guard_jobs_and_a_publisher_sees_only_its_own(tmp_path: Path, short_clip: bytes) -> None:
    auth = {"operator_token": OPERATOR, "publish_tokens": {"a": TOKEN_A, "b": TOKEN_B}}
    runner, node = await open_node(tmp_path, auth=auth)
    try:
        ref = await node.upload(short_clip, token=TOKEN_A)
        status, answer = await node.submit({"input": ref})
        assert status == 401, answer
        status, answer = await node.submit({"input": ref}, token="not-a-known-token")
        assert status == 401
        status, job = await node.submit({"input": ref}, token=TOKEN_A, key="k1")
        assert status == 202
        status, other = await node.submit({"input": ref}, token=TOKEN_B, key="k1")  # keys are per token
        assert status == 202 and other["id"] != job["id"]
        for path in (f"/api/jobs/{job['id']}", "/api/jobs"):
            assert (await node.call("GET", path))[0] == 401
        assert (await node.call("GET", f"/api/jobs/{job['id']}", TOKEN_B))[0] == 404
        assert (await node.call("DELETE", f"/api/jobs/{job['id']}", TOKEN_B))[0] == 404
        assert (await node.call("GET", f"/api/jobs/{job['id']}/output", TOKEN_B))[0] == 404
        assert [j["id"] for j in (await node.call("GET", "/api/jobs", TOKEN_B))[2]["jobs"]] == [other["id"]]
        assert {j["id"] for j in (await node.call("GET", "/api/jobs", OPERATOR))[2]["jobs"]} == {job["id"], other["id"]}
        done = await node.wait(job["id"], ended, token=TOKEN_A)
        assert done["state"] == "succeeded"
        assert (await node.call("GET", f"/api/jobs/{job['id']}/output", TOKEN_A))[0] == 200
        stored = (node.data_dir / "jobs.sqlite3").read_bytes() + (node.data_dir / "jobs.sqlite3-wal").read_bytes()
        assert TOKEN_A.encode() not in stored and b"publish:a" in stored  # its identity, never the token
    finally:
        await node.http.close()
        await runner.cleanup()


@pytest.mark.browser
async def test_the_ops_page_lists_jobs_and_cancels_one(tmp_path: Path, short_clip: bytes, long_clip: bytes, browser) -> None:  # noqa: F811
    runner, node = await open_node(tmp_path, auth={"operator_token": OPERATOR})
    try:
        _, done = await node.submit({"input": await node.upload(short_clip, OPERATOR), "preset": "edges"}, OPERATOR)
        await node.wait(done["id"], ended, token=OPERATOR)
        long_ref = await node.upload(long_clip, OPERATOR)
        page = await browser.new_page()
        async with evidence(tmp_path, ops=page):
            await page.navigate(f"{node.url}/ops#token={OPERATOR}")
            row = "document.querySelector('tr[data-job=\"{}\"]')"
            await page.wait_for(f"{row.format(done['id'])}?.textContent.includes('succeeded')", timeout=10)
            # one job runs, two wait behind it: the last is cancellable from the page for a while
            _, first = await node.submit({"input": long_ref, "preset": LONG_PRESET}, OPERATOR)
            await node.submit({"input": long_ref, "preset": "edges"}, OPERATOR)
            _, long = await node.submit({"input": long_ref, "preset": LONG_PRESET}, OPERATOR)
            assert await page.evaluate(f"{row.format(done['id'])}.querySelector('a').getAttribute('href')") == (
                f"/api/jobs/{done['id']}/output"
            )
            assert "edges" in await page.evaluate(f"{row.format(done['id'])}.textContent")
            await page.wait_for(f"{row.format(long['id'])}?.querySelector('button') != null", timeout=10)
            await page.evaluate(f"{row.format(long['id'])}.querySelector('button').click()")
            await page.wait_for(f"{row.format(long['id'])}?.textContent.includes('canceled')", timeout=10)
            assert await page.evaluate("window.livegenJobs.lastError") is None
        assert (await node.job(long["id"], OPERATOR))["state"] == "canceled"
        await node.call("DELETE", f"/api/jobs/{first['id']}", OPERATOR)
    finally:
        await node.http.close()
        await runner.cleanup()


def test_errors_are_transient_or_permanent() -> None:
    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert error_kind(FileError("undecodable")) == "permanent"
    assert error_kind(client_error("NoSuchKey", 404)) == "permanent"
    assert error_kind(client_error("AccessDenied", 403)) == "permanent"
    assert error_kind(client_error("SlowDown", 503)) == "transient"
    assert error_kind(ReadTimeoutError(endpoint_url="http://s3")) == "transient"
    assert error_kind(MemoryError()) == "transient"
    assert error_kind(OSError(28, "No space left on device")) == "transient"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    if (missing := moto_missing()) is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"moto is missing in CI: {missing}")
        pytest.skip(missing)
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with MotoS3Server(buckets=[BUCKET]) as server:
        yield server


async def test_object_storage_input_and_output(tmp_path: Path, s3: MotoS3Server, short_clip: bytes) -> None:
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="incoming/clip.mp4", Body=short_clip)
    client.put_object(Bucket=BUCKET, Key="incoming/broken.mp4", Body=b"\x00\x00\x00\x18ftypisom" + b"\x17" * 4000)
    upload = {"endpoint": s3.endpoint, "bucket": BUCKET, "prefix": "processed/", "part_bytes": 5 * 1024 * 1024}
    runner, node = await open_node(
        tmp_path, recording={"dir": str(tmp_path / "recordings"), "upload": upload},
        jobs={"retry_base_s": 1.0, "retry_cap_s": 2.0, "max_attempts": 10},
    )
    try:
        status, missing = await node.submit({"input": "incoming/none.mp4"})
        assert status == 422 and missing["errors"][0]["field"] == "input", missing
        status, job = await node.submit({"input": "incoming/clip.mp4", "preset": "grayscale"})
        assert status == 202, job
        status, broken = await node.submit({"input": "incoming/broken.mp4"})
        assert status == 202, broken

        done = await node.wait(job["id"], ended)
        assert done["state"] == "succeeded", done
        key = f"processed/jobs/{job['id']}/output.mp4"
        assert done["output"]["bucket"] == BUCKET and done["output"]["key"] == key
        status, _, where = await node.call("GET", f"/api/jobs/{job['id']}/output")
        assert status == 200 and where["bucket"] == BUCKET and where["key"] == key
        stored = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert video_frames(stored) == 30 and len(stored) == where["bytes"]
        async with node.http.get(where["url"]) as response:  # the presigned URL works without credentials
            assert response.status == 200 and await response.read() == stored
        assert not (node.data_dir / job["id"] / "output.mp4").exists()  # keep_local is off

        failed = await node.wait(broken["id"], ended)
        assert failed["state"] == "failed" and failed["attempts"] == 1, failed
        assert failed["error"]["kind"] == "permanent"

        # storage down when the output goes up: a transient error, retried after a backoff (its
        # jitter pinned to the ceiling: 1 s, then 2 s), without processing the file again
        node.app[JOBS].rng = lambda: 1.0
        ref = await node.upload(short_clip)
        s3.kill()
        _, retried = await node.submit({"input": ref, "preset": "edges"})
        waiting = await node.wait(retried["id"], lambda j: j["state"] == "queued" and j["attempts"] == 1, timeout=20)
        assert waiting["error"]["kind"] == "transient" and waiting["next_attempt_at"] > time.time() - 0.5, waiting
        assert (node.data_dir / retried["id"] / "output.mp4").exists()  # kept for the next attempt
        s3.start()
        done = await node.wait(retried["id"], ended, timeout=30)
        assert done["state"] == "succeeded" and done["attempts"] >= 2 and done["frames_done"] == 30, done
        assert video_frames(client.get_object(Bucket=BUCKET, Key=done["output"]["key"])["Body"].read()) == 30
    finally:
        await node.http.close()
        await runner.cleanup()


async def test_a_node_killed_mid_job_runs_its_jobs_again_after_a_restart(tmp_path: Path, short_clip: bytes, long_clip: bytes) -> None:
    settings = {
        "engine": {"device": "cpu", "shed": False, "presets_dir": str(light_presets(tmp_path / "presets"))},
        "server": {"uploads_dir": str(tmp_path / "uploads")},
        "jobs": {"data_dir": str(tmp_path / "jobs"), "max_attempts": 3},
        "diffusion": {"enabled": False},
    }
    first = NodeProcess(tmp_path / "first", device="cpu", settings=settings)
    (tmp_path / "first").mkdir()
    first.start()
    try:
        async with aiohttp.ClientSession() as http:
            await first.wait_ready(http, timeout=60)
            node = Node(first.url, http, None, tmp_path / "jobs")  # type: ignore[arg-type]
            long_ref, short_ref = await node.upload(long_clip), await node.upload(short_clip)
            _, running = await node.submit({"input": long_ref, "preset": LONG_PRESET})
            _, queued = await node.submit({"input": short_ref, "preset": "edges"})
            await node.wait(running["id"], lambda j: j["state"] == "running")
            assert (await node.job(queued["id"]))["state"] == "queued"
            os.kill(first.pid, signal.SIGKILL)
            first.process.wait(10)
    finally:
        first.stop()

    second = NodeProcess(tmp_path / "second", device="cpu", settings=settings)
    (tmp_path / "second").mkdir()
    second.start()
    try:
        async with aiohttp.ClientSession() as http:
            await second.wait_ready(http, timeout=60)
            node = Node(second.url, http, None, tmp_path / "jobs")  # type: ignore[arg-type]
            again = await node.wait(running["id"], ended, timeout=40)
            other = await node.wait(queued["id"], ended, timeout=20)
            assert again["state"] == "succeeded" and again["attempts"] == 2, again
            assert other["state"] == "succeeded" and other["attempts"] == 1, other
            for job, frames in ((again, 450), (other, 30)):
                async with http.get(f"{second.url}/api/jobs/{job['id']}/output") as response:
                    assert response.status == 200 and video_frames(await response.read()) == frames
    finally:
        second.stop()
    leftovers = [p.name for p in (tmp_path / "jobs").rglob("*") if p.is_file() and p.name.endswith(".part")]
    assert not leftovers
