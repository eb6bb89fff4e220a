"""Recording through the real node: start and stop by API, list, download with Range, delete;
a node killed with SIGKILL mid-recording leaves a file that plays up to its last fragment; with
object storage configured the recording ends up in the bucket (a real S3 API server), verified,
and the local file is removed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import aiohttp
import av
import pytest

from livegen.bench.node import NodeProcess
from livegen.testing.clients import WhipPublisher
from livegen.testing.tracks import SyntheticAudioTrack, SyntheticVideoTrack
from tests.conftest import node_settings, wait_until
from tests.s3_server import MotoS3Server, moto_missing
from tests.test_bad_input import request

BUCKET = "livegen-recordings"


def decoded_frames(path: Path) -> tuple[int, int]:
    """(video frames, audio frames) decodable from the file, reading until the data ends."""
    video = audio = 0
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(*container.streams):
                if isinstance(frame, av.VideoFrame):
                    video += 1
                else:
                    audio += 1
        except av.error.InvalidDataError:
            pass  # a torn last fragment: what came before it is what counts
    return video, audio


async def publish(base_url: str, http: aiohttp.ClientSession) -> WhipPublisher:
    publisher = WhipPublisher(base_url, "rec", http, preset="passthrough")
    await publisher.publish(SyntheticVideoTrack(320, 240, fps=30), SyntheticAudioTrack())
    return publisher


@pytest.fixture
def settings(tmp_path):
    return node_settings(recording={"dir": str(tmp_path / "recordings")})


async def test_record_list_download_and_delete(live_node, tmp_path):
    publisher = await publish(live_node.url, live_node.http)
    await wait_until(lambda: "rec" in live_node.hub.streams)
    code, _, text = await request(live_node, "POST", "/api/streams/rec/recordings")
    assert code == 201, text
    recording = json.loads(text)
    await asyncio.sleep(3)
    listed = json.loads((await request(live_node, "GET", "/api/recordings"))[2])["recordings"]
    running = next(r for r in listed if r["id"] == recording["id"])
    assert running["state"] == "live" and running["bytes"] > 0 and running["duration_s"] > 1
    code, _, _ = await request(live_node, "DELETE", f"/api/recordings/{recording['id']}")
    assert code == 409  # running: stop it first

    code, _, _ = await request(live_node, "DELETE", f"/api/streams/rec/recordings/{recording['id']}")
    assert code == 200
    await publisher.close()
    listed = json.loads((await request(live_node, "GET", "/api/recordings"))[2])["recordings"]
    [done] = [r for r in listed if r["id"] == recording["id"]]
    assert done["state"] == "complete" and done["bytes"] > 0
    path = Path(done["files"][0])
    video, audio = decoded_frames(path)
    assert video > 30 and audio > 100, (video, audio)  # 3 s: AAC is 47 packets a second

    async with live_node.http.get(f"{live_node.url}/api/recordings/{recording['id']}/file", headers={"Range": "bytes=4-11"}) as response:
        assert response.status == 206 and response.headers["Content-Type"] == "video/mp4"
        assert await response.read() == path.read_bytes()[4:12]  # "ftyp" + brand: a player can seek
    async with live_node.http.get(f"{live_node.url}/api/recordings/{recording['id']}/file") as response:
        assert response.status == 200 and len(await response.read()) == path.stat().st_size
    for bad, status in (("nothex!!", 400), ("00000000", 404)):
        code, _, _ = await request(live_node, "GET", f"/api/recordings/{bad}/file")
        assert code == status
    code, _, _ = await request(live_node, "DELETE", f"/api/recordings/{recording['id']}")
    assert code == 200 and not path.exists()
    code, _, _ = await request(live_node, "DELETE", f"/api/recordings/{recording['id']}")
    assert code == 404


async def test_a_node_killed_mid_recording_leaves_a_playable_file(tmp_path):
    folder = tmp_path / "recordings"
    node = NodeProcess(tmp_path, device="cpu", settings={"recording": {"dir": str(folder), "auto": True}})
    node.start()
    try:
        async with aiohttp.ClientSession() as http:
            await node.wait_ready(http, timeout=60)
            publisher = await publish(node.url, http)
            await wait_until(lambda: any(folder.glob("rec_*.mp4")), timeout=20)
            [path] = list(folder.glob("rec_*.mp4"))
            await wait_until(lambda: path.stat().st_size > 200_000, timeout=20)
            os.kill(node.pid, signal.SIGKILL)
            node.process.wait(10)
            await publisher.pc.close()
    finally:
        node.stop()
    video, audio = decoded_frames(path)
    assert video > 30 and audio > 30, (video, audio)


@pytest.fixture
def s3():
    if (missing := moto_missing()) is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"moto is missing in CI: {missing}")
        pytest.skip(missing)
    with MotoS3Server(buckets=[BUCKET]) as server:
        yield server


async def test_a_recording_is_uploaded_verified_and_removed_locally(tmp_path, s3, monkeypatch):
    from tests.conftest import start_node

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    folder = tmp_path / "recordings"
    settings = node_settings(recording={
        "dir": str(folder),
        "upload": {"endpoint": s3.endpoint, "bucket": BUCKET, "prefix": "live/", "part_bytes": 5 * 1024 * 1024},
    })
    runner, url = await start_node(settings)
    try:
        async with aiohttp.ClientSession() as http:
            publisher = await publish(url, http)
            async with http.post(f"{url}/api/streams/rec/recordings") as response:
                assert response.status == 201
                recording = await response.json()
            await asyncio.sleep(3)
            async with http.delete(f"{url}/api/streams/rec/recordings/{recording['id']}") as response:
                assert response.status == 200
            await publisher.close()
            client = s3.client()

            def uploaded() -> list[dict]:
                return client.list_objects_v2(Bucket=BUCKET, Prefix="live/").get("Contents", [])

            await wait_until(lambda: uploaded() and not list(folder.glob("*.mp4")), timeout=30)
            [obj] = uploaded()
            assert obj["Key"].startswith("live/rec_") and obj["Key"].endswith(".mp4") and obj["Size"] > 10_000
            async with http.get(f"{url}/api/recordings") as response:
                [listed] = [r for r in (await response.json())["recordings"] if r["id"] == recording["id"]]
            assert listed["state"] == "uploaded" and listed["uploads"][0]["key"] == obj["Key"]
            async with http.get(f"{url}/metrics") as response:
                metrics = await response.text()
            assert "livegen_recording_uploads_total 1.0" in metrics
            assert "livegen_recording_upload_failures_total 0.0" in metrics
    finally:
        await runner.cleanup()
