"""The aiohttp app factory: wires settings, presets, the device worker and the stream hub.

No module globals: everything the handlers need hangs off the app under typed keys. The worker
starts with the app and stops after every session has been closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from livegen.api import assets as asset_routes
from livegen.api import jobs as job_routes
from livegen.api import metrics, ops, outputs, pages, recordings, streams, webrtc
from livegen.api.cors import cors_middleware
from livegen.api.keys import ASSETS, CLUSTER, GENERATOR, HUB, SETTINGS, WORKER
from livegen.api.problems import ParserErrorLog, answer_expectations, problem_middleware
from livegen.cluster.metrics import ClusterCollector
from livegen.cluster.registry import ClusterRegistry, default_public_url
from livegen.config import Settings
from livegen.hub.registry import StreamHub
from livegen.jobs.runner import JobRunner
from livegen.jobs.storage import JobStorage
from livegen.relay.upload import RecordingUploader
from livegen.rtc import aiortc_adapter
from livegen.runtime import NodeEngine

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """Build the node's app; raises `ConfigError` for bad presets or an unusable device."""
    built = NodeEngine.build(settings)
    assets, worker, generator, presets = built.assets, built.worker, built.generator, built.presets
    aiortc_adapter.apply_policy(settings.rtc.host_addresses, settings.rtc.udp_ports)
    answer_expectations()  # before the routes are made: they take aiohttp's default then

    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[cors_middleware(settings.server.cors_origins), problem_middleware],
        handler_args={"logger": ParserErrorLog()},
    )
    app[SETTINGS] = settings
    app[ASSETS] = assets
    app[WORKER] = worker
    app[GENERATOR] = generator
    relay, recording = settings.relay, settings.recording
    uploader = None
    if recording.upload is not None:
        uploader = RecordingUploader(
            recording.upload, recording.dir, backoff_base_s=relay.backoff_base_s, backoff_cap_s=relay.backoff_cap_s
        )
    app[HUB] = StreamHub(settings, worker, presets, uploader)
    webrtc.add_routes(app)
    streams.add_routes(app)
    outputs.add_routes(app)
    recordings.add_routes(app)
    asset_routes.add_routes(app)
    ops.add_routes(app)
    pages.add_routes(app, settings.web_dir())
    app.cleanup_ctx.append(_run_engine)
    # after the engine's context: jobs start once the worker runs and stop before it does
    storage = JobStorage(recording.upload) if recording.upload is not None else None
    job_routes.add_routes(app, JobRunner(settings.jobs, worker, presets, assets, storage))
    metrics.install(app)
    job_routes.install_metrics(app)
    if settings.cluster.redis_url is not None:
        _join_cluster(app, settings)
    if settings.grpc.enabled:  # after the engine's context: it starts after and stops before the worker
        # imported here: grpcio is loaded only by a node that serves it
        from livegen.api.rpc import server as grpc_server

        grpc_server.install(app)
    return app


def _join_cluster(app: web.Application, settings: Settings) -> None:
    """Membership of the cluster sharing `cluster.redis_url`: claims follow the hub's streams.
    Its context comes after the engine's, so on the way out the node leaves the cluster first."""
    hub = app[HUB]
    cluster = ClusterRegistry(
        settings.cluster, default_public_url(settings), settings.rtc.max_streams, hub.streams.keys,
        accepting=lambda: not hub.draining,
    )
    hub.stream_ended.append(cluster.stream_ended)
    hub.drain_started.append(cluster.drain_started)
    app[CLUSTER] = cluster
    app[metrics.METRICS].registry.register(ClusterCollector(cluster))
    app.cleanup_ctx.append(_run_cluster)


async def _run_cluster(app: web.Application) -> AsyncIterator[None]:
    await app[CLUSTER].start()
    yield
    await app[CLUSTER].close()


async def _run_engine(app: web.Application) -> AsyncIterator[None]:
    worker, generator = app[WORKER], app[GENERATOR]
    uploader = app[HUB].uploader
    worker.start()
    generator.start()
    if uploader is not None:
        uploader.start()  # picks up recordings an earlier run left unuploaded
    yield
    await app[HUB].close()
    worker.stop()
    if uploader is not None:
        await asyncio.get_running_loop().run_in_executor(None, uploader.stop)
    await asyncio.get_running_loop().run_in_executor(None, generator.close)
