"""Shared fixtures: a real node on 127.0.0.1 with a free port, and leak checks."""

from __future__ import annotations

import asyncio
import gc
import inspect
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from livegen.api import create_app
from livegen.api.keys import HUB, WORKER
from livegen.config import Settings, load_settings
from livegen.hub.registry import StreamHub
from livegen.rtc.ingest import IngestSession
from livegen.rtc.viewer import ViewerSession


def node_settings(**sections: dict[str, Any]) -> Settings:
    """Test settings: CPU, loopback-only ICE, uploads and recordings in temporary folders, no slate,
    no environment layer; `sections` override."""
    base: dict[str, Any] = {
        # picture and frame-count checks assume full quality: shedding is tested on its own
        "engine": {"device": "cpu", "shed": False},
        "rtc": {"host_addresses": ["127.0.0.1"]},
        "server": {"uploads_dir": str(Path(tempfile.gettempdir()) / "livegen-test-uploads")},
        "recording": {"dir": str(Path(tempfile.gettempdir()) / "livegen-test-recordings")},
        # a dropped publisher ends its stream at once, unless a test asks for the slate
        "relay": {"grace_s": 0},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return load_settings(env={}, overrides=base)


@dataclass
class LiveNode:
    url: str
    app: web.Application
    http: aiohttp.ClientSession

    @property
    def hub(self) -> StreamHub:
        return self.app[HUB]


async def start_node(settings: Settings) -> tuple[web.AppRunner, str]:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
def settings() -> Settings:
    return node_settings()


@pytest.fixture
async def live_node(settings: Settings) -> AsyncIterator[LiveNode]:
    runner, url = await start_node(settings)
    async with aiohttp.ClientSession() as http:
        yield LiveNode(url, runner.app, http)
    worker = runner.app[WORKER]
    await runner.cleanup()
    assert not worker.running, "the device worker outlived the app"
    await wait_until(lambda: not media_threads(), timeout=5)


def open_sessions() -> list[str]:
    """Tags of peer sessions still alive anywhere in the process (type() avoids lazy proxies)."""
    gc.collect()
    return [o.tag for o in gc.get_objects() if type(o) in (IngestSession, ViewerSession) and not o.closed]


def media_threads() -> list[str]:
    """Threads of the node's worker and of aiortc's per-receiver decoders still running."""
    return sorted(
        t.name for t in threading.enumerate() if t.name.startswith("livegen-") or t.name.endswith("-decoder")
    )


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll `predicate` (a function, or a coroutine function) until it returns True."""
    async with asyncio.timeout(timeout):
        while not await _truth(predicate()):
            await asyncio.sleep(interval)


async def _truth(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result
