"""`GET /metrics` (Prometheus text or OpenMetrics) and the parts of the node's metrics the API owns.

`install(app)` gives the app its own `CollectorRegistry` (no global one), a middleware that
counts WHIP/WHEP error answers by status, the quality sampler the device worker hands frames
to, and NVML for GPU series while the app runs. Stream series are read from the
stream hub's snapshots at scrape time, on the loop that owns the hub.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from livegen.api.auth import authorize
from livegen.api.keys import HUB, SETTINGS, WORKER
from livegen.api.problems import Handler
from livegen.observability.gpu import GpuCollector, NvmlGpus
from livegen.observability.metrics import EngineCollector, NodeCollector, StreamReading
from livegen.observability.quality import QualitySampler
from livegen.hub.registry import StreamHub
from livegen.relay.upload import RecordingUploader

SIGNALLING_ENDPOINTS = ("whip", "whep")


class NodeMetrics:
    """The app's registry and the few measurements that belong to no other part of the node."""

    def __init__(self, app: web.Application):
        self.registry = CollectorRegistry()
        self.signalling_errors: Counter[tuple[str, int]] = Counter()
        """Error answers to WHIP and WHEP requests by (endpoint, status); written on the loop."""
        self.quality = QualitySampler()
        self.gpus: NvmlGpus | None = None
        self._gpu_collector: GpuCollector | None = None
        # the hub is looked up per scrape, so install() may run before or after it is set
        self.registry.register(
            NodeCollector(
                lambda: stream_readings(app[HUB], self.quality), lambda: self.signalling_errors,
                lambda: upload_counters(app[HUB].uploader),
            )
        )
        self.registry.register(
            EngineCollector(lambda: (app[WORKER].governor.capacity, app[WORKER].governor.latency_p95_ms))
        )

    async def start(self) -> None:
        self.quality.start()
        # nvmlInit can take a second on a GPU without persistence mode: not on the loop
        self.gpus = await asyncio.get_running_loop().run_in_executor(None, NvmlGpus.open)
        if self.gpus is not None:
            self._gpu_collector = GpuCollector(self.gpus)
            self.registry.register(self._gpu_collector)

    def close(self) -> None:
        if self._gpu_collector is not None:
            self.registry.unregister(self._gpu_collector)
            self._gpu_collector = None
        if self.gpus is not None:
            self.gpus.close()
            self.gpus = None
        self.quality.stop()


METRICS = web.AppKey("metrics", NodeMetrics)


def stream_readings(hub: StreamHub, quality: QualitySampler) -> list[StreamReading]:
    samples = quality.readings()
    return [replace(snap.reading, quality=samples.get(snap.reading.stream)) for snap in hub.snapshots()]


def upload_counters(uploader: RecordingUploader | None) -> dict[str, int] | None:
    if uploader is None:
        return None
    return {"completed": uploader.completed, "failures": uploader.failures, "retries": uploader.retries}


def _signalling_endpoint(path: str) -> str | None:
    endpoint = path.split("/", 2)[1] if path.startswith("/") else ""
    return endpoint if endpoint in SIGNALLING_ENDPOINTS else None


@web.middleware
async def count_signalling_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost, so it sees the status the client gets after the problem middleware ran."""
    endpoint = _signalling_endpoint(request.path)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # only what no inner middleware turned into a response
        if endpoint is not None and exc.status >= 400:
            request.app[METRICS].signalling_errors[endpoint, exc.status] += 1
        raise
    if endpoint is not None and response.status >= 400:
        request.app[METRICS].signalling_errors[endpoint, response.status] += 1
    return response


async def serve_metrics(request: web.Request) -> web.Response:
    # stream names are in the series: the same access as GET /api/streams
    authorize(request, request.app[SETTINGS].auth, "control", "*")
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[METRICS].registry), headers={"Content-Type": content_type})


async def _run_metrics(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]
    await metrics.start()
    # read by the device worker on every frame it finishes (see DeviceWorker._process)
    app[WORKER].quality = metrics.quality
    try:
        yield
    finally:
        app[WORKER].quality = None
        metrics.close()


def install(app: web.Application) -> None:
    """Add /metrics, error counting and the metrics' lifetime (NVML, quality thread) to `app`."""
    app[METRICS] = NodeMetrics(app)
    app.middlewares.insert(0, count_signalling_errors)
    app.router.add_get("/metrics", serve_metrics)
    app.cleanup_ctx.append(_run_metrics)
