"""Graceful shutdown: on SIGTERM the node takes no new publishers, lets live streams go on for
`server.drain_s`, then closes them and exits (what Kubernetes relies on when it stops a pod)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, wait_until
from tests.test_bad_input import SDP, real_offer, request
from tests.test_config import free_port

DRAIN_S = 12.0


def start_node(tmp_path: Path, drain_s: float) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`python -m livegen serve` on a free loopback port with its own settings file."""
    port = free_port()
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"drain_s": drain_s, "uploads_dir": str(tmp_path / "uploads")},
        "rtc": {"host_addresses": ["127.0.0.1"]},
        "engine": {"device": "cpu"},
        "diffusion": {"enabled": False},
        "recording": {"dir": str(tmp_path / "recordings")},
        "relay": {"grace_s": 30},  # a dropped publisher would hold its stream: not while draining
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEGEN_")}
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "livegen", "serve", "--port", str(port), "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    return process, f"http://127.0.0.1:{port}", log


async def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, http: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"the node exited:\n{log.read_text()[-3000:]}"
        try:
            async with http.get(f"{url}/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, "the node did not come up"
        await asyncio.sleep(0.1)


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    async with asyncio.timeout(timeout):
        while process.poll() is None:
            await asyncio.sleep(0.05)
    return process.returncode


async def frames(track, count: int) -> None:
    async with asyncio.timeout(10):
        for _ in range(count):
            await track.recv()


async def test_sigterm_drains_live_streams_then_exits(tmp_path):
    process, url, log = start_node(tmp_path, DRAIN_S)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(process, url, log, http)
            publisher = WhipPublisher(url, "cam", http)
            await publisher.publish(SyntheticVideoTrack(160, 120, fps=30))
            await publisher.wait_connected()
            viewer = WhepViewer(url, "cam", http)
            await viewer.watch()
            track = await viewer.video()
            await frames(track, 5)

            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(5):
                while True:  # the signal is handled on the node's loop: a moment later
                    async with http.get(f"{url}/ready") as response:
                        if response.status == 503:
                            assert response.headers["Retry-After"]
                            assert "the node is shutting down" in (await response.json())["reasons"]
                            break
                    await asyncio.sleep(0.05)
            async with http.post(f"{url}/whip/other", data=await real_offer(), headers=SDP) as response:
                assert response.status == 503, await response.text()
                assert response.headers["Retry-After"]
                assert (await response.json(content_type=None))["title"] == "Node shutting down"
            async with http.get(f"{url}/health") as response:
                assert response.status == 200  # alive: Kubernetes must not kill it meanwhile

            await frames(track, 30)  # the live stream still reaches its viewer, a second later
            late = WhepViewer(url, "cam", http)  # and new viewers of it are still served
            await late.watch()
            await frames(await late.video(), 5)
            assert process.poll() is None
            assert publisher.pc.connectionState == "connected"

            ended = time.monotonic()
            assert await publisher.close() == 200  # the publisher's own DELETE still reaches it
            code = await wait_exit(process, DRAIN_S - 2)  # not the drain's limit: the stream ended
            for watching in (viewer, late):
                await watching.pc.close()  # the node closed their sessions on the way out
        assert code == 0, log.read_text()[-3000:]
        assert time.monotonic() - ended < DRAIN_S - 2
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_sigterm_closes_streams_still_live_after_drain_s(tmp_path):
    drain_s = 1.5
    process, url, log = start_node(tmp_path, drain_s)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(process, url, log, http)
            publisher = WhipPublisher(url, "cam", http)
            await publisher.publish(SyntheticVideoTrack(160, 120, fps=30))
            await publisher.wait_connected()
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = await wait_exit(process, drain_s + 15)
            took = time.monotonic() - signalled
            await publisher.pc.close()
        assert code == 0, log.read_text()[-3000:]
        assert drain_s <= took, f"exited {took:.1f} s after SIGTERM with a stream live; drain_s is {drain_s}"
        assert "still live after" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def settings():
    return node_settings(relay={"grace_s": 30})


async def test_drain_ends_held_streams_and_dropped_publishers_at_once(live_node):
    """In process: a stream on its slate ends when the drain begins (its publisher would be
    refused), and a publisher dropping during the drain ends its stream instead of a slate."""
    held = WhipPublisher(live_node.url, "held", live_node.http)
    await held.publish(SyntheticVideoTrack(160, 120))
    await held.wait_connected()
    live = WhipPublisher(live_node.url, "live", live_node.http)
    await live.publish(SyntheticVideoTrack(160, 120))
    await live.wait_connected()
    await held.pc.close()  # gone without DELETE: the stream holds on its slate
    await wait_until(lambda: live_node.hub.streams["held"].ingest is None)

    drain = asyncio.ensure_future(live_node.hub.drain(30))
    await wait_until(lambda: "held" not in live_node.hub.streams, timeout=5)
    assert not drain.done() and "live" in live_node.hub.streams
    code, headers, _ = await request(live_node, "POST", "/whip/held", data=await real_offer(), headers=SDP)
    assert code == 503 and headers["Retry-After"]

    await live.pc.close()  # dropped while draining: no slate, the stream ends
    async with asyncio.timeout(10):
        assert await drain is True
    assert not live_node.hub.streams


async def test_drain_gives_up_after_its_limit(live_node):
    publisher = WhipPublisher(live_node.url, "cam", live_node.http)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    await publisher.wait_connected()
    started = time.monotonic()
    assert await live_node.hub.drain(0.3) is False
    assert 0.3 <= time.monotonic() - started < 2
    assert "cam" in live_node.hub.streams  # closing is the app cleanup's job, after the drain
    await publisher.close()
