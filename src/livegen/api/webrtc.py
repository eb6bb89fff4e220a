"""WHIP (RFC 9725) publish and WHEP watch endpoints: SDP offer in, 201 + answer + Location out."""

from __future__ import annotations

from aiohttp import web

from livegen.api.keys import MANAGER, SETTINGS
from livegen.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

SDP = "application/sdp"


async def read_sdp_offer(request: web.Request) -> str:
    if request.content_type != SDP:
        raise UnsupportedMediaType(f"the offer must be sent as {SDP}, not {request.content_type!r}")
    limit = request.app[SETTINGS].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the offer is {request.content_length} bytes; the limit is {limit}")
    body = await request.read()  # aiohttp enforces the same limit for chunked bodies (413)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the offer is not UTF-8 text") from None


def sdp_answer(answer: str, location: str) -> web.Response:
    return web.Response(status=201, text=answer, content_type=SDP, headers={"Location": location})


async def whip_publish(request: web.Request) -> web.Response:
    stream = request.match_info["stream"]
    offer = await read_sdp_offer(request)
    session, answer = await request.app[MANAGER].publish(stream, offer, request.query.get("preset"))
    return sdp_answer(answer, f"/whip/{stream}/{session.id}")


async def whip_end(request: web.Request) -> web.Response:
    await request.app[MANAGER].end_publish(request.match_info["stream"], request.match_info["session"])
    return web.Response(status=200)


async def whep_watch(request: web.Request) -> web.Response:
    stream = request.match_info["stream"]
    offer = await read_sdp_offer(request)
    session, answer = await request.app[MANAGER].watch(stream, offer)
    return sdp_answer(answer, f"/whep/{stream}/{session.id}")


async def whep_end(request: web.Request) -> web.Response:
    await request.app[MANAGER].end_watch(request.match_info["stream"], request.match_info["session"])
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whip/{stream}", whip_publish)
    app.router.add_delete("/whip/{stream}/{session}", whip_end)
    app.router.add_post("/whep/{stream}", whep_watch)
    app.router.add_delete("/whep/{stream}/{session}", whep_end)
