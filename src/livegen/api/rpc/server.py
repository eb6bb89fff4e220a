"""The frame API's gRPC server, in the node's process and on its event loop.

`install(app)` (called by the app factory when `grpc.enabled`) hangs a `FrameServer` on the
aiohttp app; the app's cleanup context starts it after the device worker and stops it before
the worker stops: running calls get a moment to finish, then are cancelled, and each closes its
job lane on the way out.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from aiohttp import web

from livegen.api.keys import GENERATOR, HUB, SETTINGS, WORKER
from livegen.api.metrics import METRICS
from livegen.api.rpc import frames
from livegen.api.rpc.metrics import RpcCollector, RpcMetrics
from livegen.api.rpc.service import FrameServicer
from livegen.config import Settings
from livegen.diffusion.generator import DiffusionGenerator
from livegen.engine.presets import PresetLibrary
from livegen.engine.worker import DeviceWorker
from livegen.errors import ConfigError
from livegen.grpcapi import livegen_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

STOP_GRACE_S = 1.0
"""Running calls get this long to finish when the node stops, then are cancelled."""


class FrameServer:
    def __init__(self, settings: Settings, worker: DeviceWorker, presets: PresetLibrary, generator: DiffusionGenerator):
        self.settings = settings
        self.worker = worker
        self.presets = presets
        self.generator = generator
        self.port: int | None = None
        """The port it listens on once started (`grpc.port`, or the one chosen for 0)."""
        self.metrics = RpcMetrics()
        self.servicer: FrameServicer | None = None
        self._server: grpc.aio.Server | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Listen on `grpc.host:grpc.port`; `ConfigError` when that address cannot be had."""
        config = self.settings.grpc
        limits = frames.Limits(config.max_width, config.max_height)
        self._pool = ThreadPoolExecutor(max(2, min(4, config.max_streams)), thread_name_prefix="livegen-grpc")
        self.servicer = FrameServicer(self.settings, self.worker, self.presets, self.generator, self._pool, self.metrics)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                # gRPC shares a port with any other process by default: a second node on the
                # same port must fail to start instead
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_FrameServiceServicer_to_server(self.servicer, server)
        address = f"{config.host}:{config.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            port, reason = 0, str(exc)
        else:
            reason = "the address is taken or not local"
        if not port:
            self._pool.shutdown(wait=False)
            raise ConfigError(f"grpc: cannot listen on {address}: {reason}")
        await server.start()
        self._server, self.port = server, port
        log.info("gRPC frame API (livegen.v1.FrameService) on %s:%d", config.host, port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(STOP_GRACE_S)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)  # each task on it is a short one


FRAME_API = web.AppKey("frame_api", FrameServer)


def install(app: web.Application) -> None:
    """Serve the frame API with `app`; call after the engine's cleanup context is added."""
    server = app[FRAME_API] = FrameServer(app[SETTINGS], app[WORKER], app[HUB].presets, app[GENERATOR])
    app[METRICS].registry.register(
        RpcCollector(server.metrics, lambda: server.servicer.active() if server.servicer is not None else {})
    )
    app.cleanup_ctx.append(_serve)


async def _serve(app: web.Application) -> AsyncIterator[None]:
    server = app[FRAME_API]
    await server.start()
    yield
    await server.stop()
