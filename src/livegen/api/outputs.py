"""REST for a stream's outputs (RTMP/RTMPS, WHIP push); recordings are in `api.recordings`.

`POST /api/streams/{stream}/outputs` `{"url", "name"?, "token"?}` → 201 with the output;
`GET` lists them with their state and counters; `DELETE …/outputs/{id}` stops one.
All need the operator token or the stream's own publish token ("control"). Answers never carry
a stream key or token: URLs are redacted.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from livegen.api.auth import authorize
from livegen.api.bodies import read_model
from livegen.api.keys import HUB, SETTINGS
from livegen.hub.stream import Stream


class OutputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048)
    name: str | None = Field(None, max_length=128)
    token: str | None = Field(None, max_length=4096)


def _stream(request: web.Request) -> Stream:
    name = request.match_info["stream"]
    authorize(request, request.app[SETTINGS].auth, "control", name)
    return request.app[HUB].stream(name)


async def add_output(request: web.Request) -> web.Response:
    stream = _stream(request)
    body = await read_model(request, OutputRequest, empty_ok=True)
    output = stream.outputs.open(body.url, body.name, body.token)
    return web.json_response(output.status.as_json(), status=201)


async def list_outputs(request: web.Request) -> web.Response:
    stream = _stream(request)
    return web.json_response({"outputs": [o for o in stream.outputs.statuses() if o["kind"] != "recording"]})


async def remove_output(request: web.Request) -> web.Response:
    stream = _stream(request)
    return web.json_response(await stream.outputs.remove(request.match_info["output"], kind="output"))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/streams/{stream}/outputs", add_output)
    app.router.add_get("/api/streams/{stream}/outputs", list_outputs)
    app.router.add_delete("/api/streams/{stream}/outputs/{output}", remove_output)
