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
from livegen.api import metrics, ops, outputs, pages, recordings, streams, webrtc
from livegen.api.cors import cors_middleware
from livegen.api.keys import ASSETS, GENERATOR, HUB, SETTINGS, WORKER
from livegen.api.problems import ParserErrorLog, answer_expectations, problem_middleware
from livegen.config import Settings
from livegen.diffusion.generator import DiffusionGenerator
from livegen.effects.base import EffectContext
from livegen.engine.presets import PresetLibrary
from livegen.engine.worker import DeviceWorker, select_device
from livegen.media.assets import AssetStore
from livegen.relay.upload import RecordingUploader
from livegen.hub.registry import StreamHub
from livegen.rtc import aiortc_adapter

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """Build the node's app; raises `ConfigError` for bad presets or an unusable device."""
    assets = AssetStore(settings.server.uploads_dir, settings.assets_dir(), settings.server.max_upload_bytes)
    engine = settings.engine
    worker = DeviceWorker(
        select_device(engine.device), engine.budget_ms, engine.cpu_threads, engine.worker_load, engine.shed
    )
    # Loads its models on a thread of its own once the app starts; until then (and for good
    # without a GPU or a model) `generated` backgrounds and `stylize` show their fallbacks.
    generator = DiffusionGenerator(settings.diffusion, worker.device)
    presets = PresetLibrary.from_folder(
        settings.presets_dir(), engine.default_preset, EffectContext(assets=assets, generator=generator),
        max_chain=engine.max_chain,
    )
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
    metrics.install(app)
    return app


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
