"""REST: live streams with their stats (`?scope=cluster`: every node's, see `api.cluster`), live
preset switching, presets, health and readiness."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from livegen.api import cluster
from livegen.api.auth import NODE, allows, authorize
from livegen.api.bodies import read_model
from livegen.api.keys import GENERATOR, HUB, SETTINGS, WORKER
from livegen.config import EffectSpec
from livegen.errors import BadRequest


class StreamPatch(BaseModel):
    """A live change: a preset, or a whole custom chain, and/or parameter changes by effect."""

    model_config = ConfigDict(extra="forbid")
    preset: str | None = None
    effects: list[EffectSpec] | None = None
    params: dict[str, dict[str, Any]] | None = None


async def list_streams(request: web.Request) -> web.Response:
    authorize(request, request.app[SETTINGS].auth, "control", NODE)
    scope = request.query.get("scope", "local")
    if scope == "cluster":
        return await cluster.cluster_streams(request)
    if scope != "local":
        raise BadRequest(f"scope must be local or cluster, not {scope[:32]!r}")
    return web.json_response({"streams": [s.info for s in request.app[HUB].snapshots()]})


async def get_stream(request: web.Request) -> web.Response:
    auth, name = request.app[SETTINGS].auth, request.match_info["stream"]
    authorize(request, auth, "watch", name)
    info = request.app[HUB].stream(name).info()
    if not allows(request, auth, "control", name):
        info["viewer_sessions"] = []  # a viewer sees how many watch, not who
    return web.json_response(info)


async def patch_stream(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    name = request.match_info["stream"]
    authorize(request, request.app[SETTINGS].auth, "control", name)
    hub.stream(name)  # 404 before looking at the body
    patch = await read_model(request, StreamPatch)
    stream = await hub.control(name, patch.preset, patch.effects, patch.params)
    return web.json_response(stream.info())


async def list_presets(request: web.Request) -> web.Response:
    presets = request.app[HUB].presets
    return web.json_response({"default": presets.default, "presets": presets.describe()})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    hub, worker = request.app[HUB], request.app[WORKER]
    reasons = []
    if not worker.running:
        reasons.append("the device worker is not running")
    if hub.at_capacity:
        reasons.append(f"all {hub.settings.rtc.max_streams} stream slots are taken")
    if hub.draining:
        reasons.append("the node is shutting down")
    if request.app[GENERATOR].loading:
        reasons.append("the diffusion models are still loading")
    state = {"device": str(worker.device), "streams": len(hub.streams)}
    if reasons:
        return web.json_response(
            {"ready": False, "reasons": reasons, **state}, status=503, headers={"Retry-After": "5"}
        )
    return web.json_response({"ready": True, **state})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/streams", list_streams)
    app.router.add_get("/api/streams/{stream}", get_stream)
    app.router.add_patch("/api/streams/{stream}", patch_stream)
    app.router.add_get("/api/presets", list_presets)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
