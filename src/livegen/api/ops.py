"""Operator routes: the node at a glance (`GET /api/node`), ending a publisher or one viewer,
and the operator page at `/ops` (served by `pages`). All need the operator token when the node
has tokens; ending a stream may also be done with the token that may publish it. A viewer is
ended here by the public id the API shows (`viewer_sessions[].id`), never by its session id."""

from __future__ import annotations

import time
from importlib import metadata

from aiohttp import web

from livegen.api.auth import NODE, authorize
from livegen.api.keys import CLUSTER, GENERATOR, HUB, SETTINGS, WORKER
from livegen.api.metrics import METRICS
from livegen.errors import NotFound
from livegen.hub.stream import public_id
from livegen.observability.gpu import read_gpus

STARTED = web.AppKey("started_at", float)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


async def node(request: web.Request) -> web.Response:
    authorize(request, request.app[SETTINGS].auth, "control", NODE)
    app = request.app
    hub, worker = app[HUB], app[WORKER]
    metrics = app.get(METRICS)
    cluster = app.get(CLUSTER)
    return web.json_response({
        "device": str(worker.device),
        "worker_running": worker.running,
        "streams": len(hub.streams),
        "max_streams": hub.settings.rtc.max_streams,
        "uptime_s": round(time.time() - app[STARTED], 1),
        "versions": {name: _version(name) for name in ("livegen", "torch", "aiortc", "av")},
        "gpus": read_gpus(metrics.gpus if metrics is not None else None),
        "diffusion": app[GENERATOR].describe(),
        "cluster": None if cluster is None else await cluster.describe(),
    })


async def end_stream(request: web.Request) -> web.Response:
    name = request.match_info["stream"]
    authorize(request, request.app[SETTINGS].auth, "control", name)
    await request.app[HUB].end_stream(name)
    return web.json_response({"stream": name, "ended": True})


async def end_viewer(request: web.Request) -> web.Response:
    name, viewer = request.match_info["stream"], request.match_info["viewer"]
    authorize(request, request.app[SETTINGS].auth, "operate", name)
    hub = request.app[HUB]
    session = next((s for s in hub.stream(name).viewers if public_id(s) == viewer), None)
    if session is None:
        raise NotFound(f"no viewer {viewer!r} on stream {name!r}")
    await hub.end_watch(name, session)
    return web.json_response({"stream": name, "viewer": viewer, "ended": True})


def add_routes(app: web.Application) -> None:
    app[STARTED] = time.time()
    app.router.add_get("/api/node", node)
    app.router.add_delete("/api/streams/{stream}", end_stream)
    app.router.add_delete("/api/streams/{stream}/viewers/{viewer}", end_viewer)
