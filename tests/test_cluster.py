"""One endpoint for many nodes: three real nodes (`livegen serve` subprocesses, one stream slot
each) sharing a real redis-server on 127.0.0.1, and aiortc peers that follow the redirects.

redis-server comes from Debian (scripts/install-redis.sh); without it these tests skip, except
in CI (CI=true), where they fail. The nodes start once for the module, in parallel; each test
ends the streams it started, and the test that SIGKILLs a node runs last.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis
import redis.asyncio
from aiohttp import web

from livegen.api import create_app
from livegen.api.keys import CLUSTER, HUB
from livegen.bench.node import NodeProcess, free_port
from livegen.cluster import ClusterRegistry, scripts
from livegen.config import ClusterSettings, load_settings
from livegen.errors import ConfigError
from livegen.testing.clients import SignallingError, WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, wait_until

TOKEN = "cluster-publish-token"
OPERATOR = {"Authorization": "Bearer cluster-operator-token"}
"""The node-wide reads (`/api/node`, `/api/streams`, `/metrics`) want the operator."""
HEARTBEAT_S, TTL_S = 0.5, 3.0
NODE_IDS = ("a", "b", "c")
# three nodes start on a shared CI machine within the first test's limit
pytestmark = pytest.mark.timeout(180)
DUMMY_OFFER = "v=0\r\n"
"""Enough for the routing answers (307, 409, 503), which come before the offer is parsed."""


# ---- redis-server and the nodes -----------------------------------------------------------------
def require_redis() -> str:
    """redis-server's path; skips the calling test without it, fails it in CI (CI=true)."""
    found = shutil.which("redis-server")
    if found is None:
        message = "redis-server is not installed: run scripts/install-redis.sh (Debian: redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the cluster tests")
        pytest.skip(message)
    return found


class RedisServer:
    """redis-server on 127.0.0.1 on a free port, in `folder`, persisting nothing."""

    def __init__(self, binary: str, folder: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = open(folder / "redis.log", "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--daemonize", "no"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._pong():
            assert self._process.poll() is None, (folder / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not answer PING within 10 s"
            time.sleep(0.05)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._log.close()


@dataclass
class Node:
    id: str
    process: NodeProcess
    killed: bool = False
    """Set by a test that kills it (the module's tests may run on several workers, each with
    its own nodes)."""

    @property
    def url(self) -> str:
        return self.process.url


def node_config(node_id: str, redis_url: str, scratch: Path) -> dict:
    return {
        "engine": {"device": "cpu", "shed": False},
        "diffusion": {"enabled": False},
        "rtc": {"host_addresses": ["127.0.0.1"], "max_streams": 1},
        "relay": {"grace_s": 0},
        "auth": {"publish_tokens": {"*": TOKEN}, "operator_token": OPERATOR["Authorization"].split()[1]},
        "server": {"uploads_dir": str(scratch / "uploads")},
        "recording": {"dir": str(scratch / "recordings")},
        "cluster": {"redis_url": redis_url, "node_id": node_id, "heartbeat_s": HEARTBEAT_S, "ttl_s": TTL_S},
    }


def wait_healthy(nodes: list[Node], timeout: float = 100.0) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            process = node.process.process
            assert process is not None and process.poll() is None, f"node {node.id} exited:\n{node.process.log_tail()}"
            try:
                with urllib.request.urlopen(f"{node.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"node {node.id} did not come up:\n{node.process.log_tail()}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    binary = require_redis()
    with tempfile.TemporaryDirectory(prefix="livegen-redis-") as folder:
        server = RedisServer(binary, Path(folder))
        yield server
        server.stop()


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[dict[str, Node]]:
    """Nodes a, b and c, started in parallel; stopped (SIGTERM) at the end of the module."""
    with tempfile.TemporaryDirectory(prefix="livegen-cluster-") as scratch:
        nodes = []
        for node_id in NODE_IDS:
            folder = Path(scratch) / node_id
            folder.mkdir()
            config = node_config(node_id, redis_server.url, folder)
            nodes.append(Node(node_id, NodeProcess(folder, device="cpu", settings=config)))
        try:
            for node in nodes:
                node.process.start()
            wait_healthy(nodes)
            yield {node.id: node for node in nodes}
        finally:
            running = [n.process.process for n in nodes if n.process.process is not None]
            for process in running:  # one SIGTERM each: a second one cuts the node's shutdown short
                if process.poll() is None:
                    process.terminate()
            for process in running:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            for node in nodes:
                node.process.stop()  # closes its log; the process has ended
        logs = {node.id: node.process.log_path.read_text(errors="replace") for node in nodes}
    # a node that stops on SIGTERM leaves the cluster: no record, no claim left behind (a killed
    # node's keys expired in the test that killed it)
    stopped = {node.id for node in nodes if node.process.returncode == 0}
    expected = {node.id for node in nodes if not node.killed}
    left = [key.decode() for key in redis.Redis.from_url(redis_server.url).keys("*")]
    assert stopped == expected, f"exit codes {[(n.id, n.process.returncode) for n in nodes]}; the logs end:\n" + "\n".join(
        f"--- {node_id}\n{text[-2500:]}" for node_id, text in logs.items())
    assert left == [], f"{left} left behind; the nodes' logs end:\n" + "\n".join(t[-1500:] for t in logs.values())
    for node_id, text in logs.items():
        assert "Traceback" not in text, f"node {node_id}:\n{text[-3000:]}"


# ---- helpers ---------------------------------------------------------------------------------
async def post(http: aiohttp.ClientSession, url: str, token: str | None = TOKEN) -> tuple[int, dict, str]:
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=DUMMY_OFFER, headers=headers, allow_redirects=False) as answer:
        return answer.status, dict(answer.headers), await answer.text()


async def publish(http: aiohttp.ClientSession, base_url: str, stream: str) -> WhipPublisher:
    publisher = WhipPublisher(base_url, stream, http, token=TOKEN)
    try:
        await publisher.publish(SyntheticVideoTrack(160, 120, fps=10))
        await publisher.wait_connected()
    except BaseException:
        await publisher.pc.close()
        raise
    return publisher


async def cluster_streams(http: aiohttp.ClientSession, base_url: str) -> dict[str, tuple[str, str]]:
    """`GET /api/streams?scope=cluster` as {name: (node id, node url)}."""
    async with http.get(f"{base_url}/api/streams?scope=cluster", headers=OPERATOR) as answer:
        assert answer.status == 200
        body = await answer.json()
    assert body["scope"] == "cluster" and body["complete"] is True
    return {s["name"]: (s["node"], s["url"]) for s in body["streams"]}


async def node_loads(http: aiohttp.ClientSession, base_url: str) -> dict[str, int]:
    """The live nodes' stream counts as `base_url`'s node reads them from Redis."""
    async with http.get(f"{base_url}/api/node", headers=OPERATOR) as answer:
        body = await answer.json()
    return {n["id"]: n["streams"] for n in body["cluster"]["nodes"]}


async def close_all(http: aiohttp.ClientSession, base_url: str, *clients) -> None:
    for client in clients:
        assert await client.close() == 200
    await wait_until(lambda: _no_streams(http, base_url), timeout=5)


async def _no_streams(http: aiohttp.ClientSession, base_url: str) -> bool:
    return not await cluster_streams(http, base_url)


@asynccontextmanager
async def in_process_nodes(redis_url: str, prefix: str, node_ids: tuple[str, ...], **sections) -> AsyncIterator[dict]:
    """Nodes of a cluster of their own (`prefix`) in this process, as {id: (app, url)}; `sections`
    go into every node's settings."""
    runners, nodes = [], {}
    try:
        for node_id in node_ids:
            port = free_port()
            settings = node_settings(
                server={"port": port},
                cluster={"redis_url": redis_url, "node_id": node_id, "heartbeat_s": 0.5, "ttl_s": 2,
                         "key_prefix": prefix},
                **sections,
            )
            runner = web.AppRunner(create_app(settings), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
            nodes[node_id] = (runner.app, f"http://127.0.0.1:{port}")
        yield nodes
    finally:
        for runner in runners:
            await runner.cleanup()


# ---- the tests -------------------------------------------------------------------------------
def test_cluster_settings_are_checked_at_start():
    with pytest.raises(ConfigError, match="cluster: .*ttl_s"):
        load_settings(env={}, overrides={"cluster": {"heartbeat_s": 2, "ttl_s": 3}})
    with pytest.raises(ConfigError, match="cluster.redis_url"):
        load_settings(env={}, overrides={"cluster": {"redis_url": "http://10.0.0.5:6379"}})
    with pytest.raises(ConfigError, match="cluster.public_url"):
        load_settings(env={}, overrides={"cluster": {"public_url": "node-2.example.com"}})
    assert load_settings(env={}).cluster.redis_url is None  # off unless asked for


async def test_a_full_node_redirects_publishers_to_the_least_loaded_node_with_room(cluster):
    a, b, c = (cluster[i].url for i in NODE_IDS)
    async with aiohttp.ClientSession() as http:
        on_a = await publish(http, a, "full-a")  # a's one slot is taken

        # auth first: without a valid token a full node says 401, not where to go
        status, headers, _ = await post(http, f"{a}/whip/next", token=None)
        assert status == 401 and "Location" not in headers
        status, headers, _ = await post(http, f"{a}/whip/next", token="not-the-token")
        assert status == 401 and "Location" not in headers

        # b and c are empty: the tie goes to b; the path and query go along
        status, headers, _ = await post(http, f"{a}/whip/next?preset=grayscale")
        assert status == 307 and headers["Location"] == f"{b}/whip/next?preset=grayscale"

        on_b = await publish(http, b, "full-b")
        await wait_until(lambda: _loads_are(http, a, {"a": 1, "b": 1, "c": 0}), timeout=5)
        for full in (a, b):
            status, headers, _ = await post(http, f"{full}/whip/next")
            assert status == 307 and headers["Location"] == f"{c}/whip/next", full
        # a name another node holds goes to that node, full or not: it answers as a lone node would
        status, headers, _ = await post(http, f"{a}/whip/full-b")
        assert status == 307 and headers["Location"] == f"{b}/whip/full-b"

        on_c = await publish(http, c, "full-c")
        await wait_until(lambda: _loads_are(http, a, {"a": 1, "b": 1, "c": 1}), timeout=5)
        status, headers, _ = await post(http, f"{a}/whip/next")
        assert status == 503 and "Retry-After" in headers and "Location" not in headers

        assert await cluster_streams(http, c) == {"full-a": ("a", a), "full-b": ("b", b), "full-c": ("c", c)}
        async with http.get(f"{a}/api/streams?scope=cluster") as answer:
            assert answer.status == 401  # the cluster's streams are the operator's to see
        async with http.get(f"{a}/api/streams", headers=OPERATOR) as answer:  # the default scope stays this node's
            assert [s["stream"] for s in (await answer.json())["streams"]] == ["full-a"]
        async with http.get(f"{a}/api/streams?scope=everywhere", headers=OPERATOR) as answer:
            assert answer.status == 400
        async with http.get(f"{a}/metrics", headers=OPERATOR) as answer:
            metrics = await answer.text()
        assert 'livegen_cluster_redirects_total{endpoint="whip"} 3.0' in metrics  # a sent three of them
        assert "livegen_cluster_redis_up 1.0" in metrics and "livegen_cluster_errors_total 0.0" in metrics
        await close_all(http, a, on_a, on_b, on_c)


async def _loads_are(http: aiohttp.ClientSession, base_url: str, expected: dict[str, int]) -> bool:
    return await node_loads(http, base_url) == expected


async def test_a_stream_name_is_published_once_in_the_cluster(cluster):
    a, b, c = (cluster[i].url for i in NODE_IDS)
    async with aiohttp.ClientSession() as http:
        on_a = await publish(http, a, "solo")
        status, headers, _ = await post(http, f"{b}/whip/solo")  # b has room, but a holds the name
        assert status == 307 and headers["Location"] == f"{a}/whip/solo"
        with pytest.raises(SignallingError) as refused:  # followed to a, whose publisher is live
            await publish(http, c, "solo")
        assert refused.value.status == 409 and "already has a publisher" in str(refused.value)

        # ending the stream frees the name at once (not after the TTL)
        assert await on_a.close() == 200
        again = await publish(http, b, "solo")
        assert again.location.startswith(f"{b}/whip/solo/")  # absolute, on the node that holds it
        assert await cluster_streams(http, a) == {"solo": ("b", b)}
        assert await again.close() == 200

        # two publishers racing for one name on two nodes: exactly one gets it
        results = await asyncio.gather(publish(http, a, "race"), publish(http, c, "race"), return_exceptions=True)
        winners = [r for r in results if isinstance(r, WhipPublisher)]
        losers = [r for r in results if not isinstance(r, WhipPublisher)]
        assert len(winners) == 1 and len(losers) == 1, results
        assert isinstance(losers[0], SignallingError) and losers[0].status == 409
        await close_all(http, a, *winners)


async def test_a_viewer_is_redirected_to_the_node_that_holds_the_stream(cluster):
    a, b, c = (cluster[i].url for i in NODE_IDS)
    async with aiohttp.ClientSession() as http:
        on_a = await publish(http, a, "show")
        status, headers, _ = await post(http, f"{b}/whep/show", token=None)  # watching is open
        assert status == 307 and headers["Location"] == f"{a}/whep/show"
        # a browser page on another origin may follow it: the 307 carries CORS headers too
        cors = {"Origin": "https://player.example", "Content-Type": "application/sdp"}
        async with http.post(f"{b}/whep/show", data=DUMMY_OFFER, headers=cors, allow_redirects=False) as answer:
            assert answer.status == 307 and answer.headers["Access-Control-Allow-Origin"] == "*"
            assert "Location" in answer.headers["Access-Control-Expose-Headers"]
        async with http.head(f"{c}/whep/show", allow_redirects=False) as answer:
            assert answer.status == 307 and answer.headers["Location"] == f"{a}/whep/show"
        # nobody publishes it anywhere: today's answer, no redirect
        status, headers, _ = await post(http, f"{b}/whep/nobody", token=None)
        assert status == 409 and "Retry-After" in headers and "Location" not in headers
        await close_all(http, a, on_a)


async def test_publish_and_watch_follow_the_redirects_end_to_end(cluster):
    a, b, c = (cluster[i].url for i in NODE_IDS)
    async with aiohttp.ClientSession() as http:
        hold = await publish(http, a, "e2e-hold")  # a is full
        publisher = await publish(http, a, "e2e")
        assert publisher.redirects == [f"{b}/whip/e2e"]
        assert publisher.location.startswith(f"{b}/whip/e2e/")

        viewer = WhepViewer(c, "e2e", http)
        await viewer.watch()
        assert viewer.redirects == [f"{b}/whep/e2e"]
        assert viewer.location.startswith(f"{b}/whep/e2e/")
        await viewer.wait_connected()
        track = await viewer.video()
        async with asyncio.timeout(15):
            frames = [await track.recv() for _ in range(5)]
        assert {(f.width, f.height) for f in frames} == {(160, 120)}

        async with http.get(f"{b}/api/streams/e2e") as answer:
            assert (await answer.json())["viewers"] == 1  # the viewer watches on b itself
        assert await viewer.close() == 200  # DELETE went to b, the node that answered
        await close_all(http, a, publisher, hold)


async def test_a_killed_node_drops_out_within_the_ttl_and_frees_its_names(cluster):
    a, c = cluster["a"].url, cluster["c"]
    async with aiohttp.ClientSession() as http:
        doomed = await publish(http, c.url, "doomed")
        assert (await cluster_streams(http, a))["doomed"] == ("c", c.url)

        c.killed = True
        c.process.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        c.process.process.wait(5)
        doomed.location = None  # nobody is left to DELETE it at
        await doomed.close()
        status, headers, _ = await post(http, f"{a}/whip/doomed")  # its claim outlives it for the TTL
        assert status == 307 and headers["Location"] == f"{c.url}/whip/doomed"

        async def forgotten() -> bool:
            return "doomed" not in await cluster_streams(http, a) and "c" not in await node_loads(http, a)

        await wait_until(forgotten, timeout=TTL_S + 2)
        assert time.monotonic() - killed <= TTL_S + 2 * HEARTBEAT_S
        heir = await publish(http, a, "doomed")
        assert await cluster_streams(http, a) == {"doomed": ("a", a)}
        await close_all(http, a, heir)


async def test_without_redis_the_node_serves_locally():
    dead, port = f"redis://127.0.0.1:{free_port()}/0", free_port()
    settings = node_settings(
        server={"port": port},  # session URLs are absolute on http://<host>:<port> in a cluster
        rtc={"max_streams": 1},
        cluster={"redis_url": dead, "node_id": "alone", "heartbeat_s": 0.5, "ttl_s": 2, "timeout_s": 0.5},
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            publisher = await publish(http, url, "local")  # no token configured here
            assert publisher.location.startswith(f"{url}/whip/local/")
            status, headers, _ = await post(http, f"{url}/whip/other", token=None)
            assert status == 503 and "Location" not in headers  # full, and no cluster to ask
            status, _, _ = await post(http, f"{url}/whep/elsewhere", token=None)
            assert status == 409
            async with http.get(f"{url}/api/streams?scope=cluster") as answer:
                body = await answer.json()
            assert answer.status == 200 and body["complete"] is False
            assert [(s["name"], s["node"]) for s in body["streams"]] == [("local", "alone")]
            async with http.get(f"{url}/api/node") as answer:
                assert (await answer.json())["cluster"]["redis"] == "unreachable"
            await wait_until(lambda: runner.app[CLUSTER].errors >= 2, timeout=5)  # the heartbeat keeps trying
            async with http.get(f"{url}/metrics") as answer:
                metrics = await answer.text()
            assert "livegen_cluster_redis_up 0.0" in metrics
            errors = next(line for line in metrics.splitlines() if line.startswith("livegen_cluster_errors_total"))
            assert float(errors.split()[1]) >= 2
            assert await publisher.close() == 200
    finally:
        await runner.cleanup()



async def test_a_draining_node_sends_new_publishers_to_a_node_with_room(redis_server):
    """SIGTERM starts a drain: the node's record says it takes no one new, and a publish that
    reaches it anyway (an old DNS answer, a load balancer) is sent on instead of refused."""
    async with in_process_nodes(redis_server.url, "livegen-drain", ("d", "e")) as nodes:
        (draining, d), (peer_app, e) = nodes["d"], nodes["e"]
        await draining[HUB].drain(0)
        peer = peer_app[CLUSTER]

        async def d_is_closed() -> bool:
            found = {node.id: node for node in await peer.nodes() or ()}
            return "d" in found and not found["d"].has_room and found["e"].has_room

        await wait_until(d_is_closed, timeout=5)
        async with aiohttp.ClientSession() as http:
            status, headers, _ = await post(http, f"{d}/whip/late", token=None)
            assert status == 307 and headers["Location"] == f"{e}/whip/late"


class LateHeartbeats:
    """A Redis client whose heartbeat calls reach Redis `delay` seconds after they are made,
    even when the caller gives up on them (as a call already on the wire does)."""

    def __init__(self, url: str):
        self.client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        self.delay = 0.0
        self.sent: list[asyncio.Task] = []

    def register_script(self, source: str):
        script = self.client.register_script(source)
        if source != scripts.HEARTBEAT:
            return script

        async def call(keys: list[str], args: list) -> object:
            async def late() -> object:
                await asyncio.sleep(self.delay)
                return await script(keys=keys, args=args)

            self.sent.append(asyncio.ensure_future(late()))
            return await asyncio.shield(self.sent[-1])

        return call

    async def aclose(self) -> None:
        await asyncio.gather(*self.sent, return_exceptions=True)
        await self.client.aclose()


async def test_a_heartbeat_in_flight_when_the_node_leaves_does_not_bring_its_record_back(redis_server):
    client = LateHeartbeats(redis_server.url)
    settings = ClusterSettings(redis_url=redis_server.url, node_id="leaver", heartbeat_s=0.5, ttl_s=5,
                               key_prefix="livegen-leave")
    registry = ClusterRegistry(settings, "http://127.0.0.1:9", 1, local_streams=lambda: [], client=client)
    keys = redis.Redis.from_url(redis_server.url).keys
    await registry.start()
    assert sorted(keys("livegen-leave:*")) == [b"livegen-leave:node:leaver", b"livegen-leave:nodes"]
    client.delay = 0.3
    registry.drain_started()  # wakes the heartbeat: a beat is on its way to Redis
    await asyncio.sleep(0.05)
    await registry.close()
    assert keys("livegen-leave:*") == []


async def test_a_publisher_coming_back_through_another_node_resumes_its_stream_on_the_slate(redis_server):
    """A publisher that dropped and reconnects through a load balancer may reach another node:
    that node sends it to the one holding its stream on the slate, where the stream resumes for
    the viewers already watching it there."""
    async with in_process_nodes(redis_server.url, "livegen-slate", ("f", "g"), relay={"grace_s": 20}) as nodes:
        (app_f, f), (app_g, g) = nodes["f"], nodes["g"]
        hub_f, hub_g = app_f[HUB], app_g[HUB]
        async with aiohttp.ClientSession() as http:
            first = WhipPublisher(f, "cam", http)
            await first.publish(SyntheticVideoTrack(160, 120, fps=10))
            await first.wait_connected()
            viewer = WhepViewer(f, "cam", http)
            await viewer.watch()
            stream = hub_f.streams["cam"]

            await first.pc.close()  # a crash: no DELETE, the stream holds on f's slate
            await wait_until(lambda: stream.ingest is None and stream.slate is not None, timeout=10)
            again = WhipPublisher(g, "cam", http)
            await again.publish(SyntheticVideoTrack(160, 120, fps=10))
            await again.wait_connected()
            assert again.redirects == [f"{f}/whip/cam"] and again.location.startswith(f"{f}/whip/cam/")
            await wait_until(lambda: stream.ingest is not None and stream.slate is None, timeout=10)
            assert hub_f.streams["cam"] is stream and len(stream.viewers) == 1  # the same viewers
            assert "cam" not in hub_g.streams and stream.info()["state"] == "live"

            second = WhipPublisher(g, "cam", http)
            with pytest.raises(SignallingError) as refused:  # while it is live, a second one is refused
                await second.publish(SyntheticVideoTrack(160, 120, fps=10))
            await second.pc.close()
            assert refused.value.status == 409 and second.redirects == [f"{f}/whip/cam"]
            assert await viewer.close() == 200 and await again.close() == 200
