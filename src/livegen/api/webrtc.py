"""WHIP (RFC 9725) publish and WHEP watch endpoints.

`POST` takes an SDP offer and answers `201` with the SDP answer (every node candidate already in
it), a relative `Location` for the session, its `ETag`, and the configured STUN/TURN servers as
`Link: <url>; rel="ice-server"` headers. `PATCH` on the session takes trickled candidates
(`application/trickle-ice-sdpfrag`, 204); an ICE restart is answered 422, not supported.
`DELETE` ends the session. `OPTIONS` (and `HEAD` for WHEP) serve discovery and CORS preflight.
In a cluster (`api.cluster`) a `POST` (and `HEAD`) may instead be answered `307` to the node
with room or the node that holds the stream, after auth, and `Location` is absolute.

A session's URL is a capability: its last part is the session id, a random secret only the
client that created the session learns (in `Location`) and the API never shows (viewers are
shown by `hub.stream.public_id`). The session routes also want the credential that created the
session (a token that may publish the stream for WHIP, one that may watch it for WHEP) or the
operator's.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from livegen.api import cluster
from livegen.api.auth import allows, authorize
from livegen.api.bodies import read_text
from livegen.api.keys import HUB, SETTINGS
from livegen.config import Settings
from livegen.errors import PreconditionFailed, StreamNotPublished
from livegen.hub.registry import check_stream_name
from livegen.rtc.trickle import SDPFRAG, parse_fragment

SDP = "application/sdp"


def ice_server_links(settings: Settings) -> list[str]:
    links = []
    for server in settings.rtc.ice_servers:
        link = f'<{server.url}>; rel="ice-server"'
        if server.username is not None:
            link += f'; username="{server.username}"; credential="{server.credential or ""}"; credential-type="password"'
        links.append(link)
    return links


def _created(request: web.Request, answer: str, location: str, etag: str) -> web.Response:
    headers = CIMultiDict({"Location": location, "ETag": etag, "Accept-Patch": SDPFRAG})
    for link in ice_server_links(request.app[SETTINGS]):
        headers.add("Link", link)
    return web.Response(status=201, text=answer, content_type=SDP, headers=headers)


async def discovery(request: web.Request) -> web.Response:
    check_stream_name(request.match_info["stream"])
    headers = CIMultiDict({"Allow": "OPTIONS, POST", "Accept-Post": SDP})
    for link in ice_server_links(request.app[SETTINGS]):
        headers.add("Link", link)
    return web.Response(status=204, headers=headers)


def _authorize(request: web.Request, action: str) -> str:
    stream = check_stream_name(request.match_info["stream"])
    authorize(request, request.app[SETTINGS].auth, action, stream)
    return stream


async def whip_publish(request: web.Request) -> web.Response:
    stream = _authorize(request, "publish")
    offer = await read_text(request, SDP, "offer")
    elsewhere = await cluster.publish_elsewhere(request, stream)
    if elsewhere is not None:
        return cluster.redirect(request, elsewhere, "whip")
    async with cluster.claimed(request, stream):
        session, answer = await request.app[HUB].publish(stream, offer, request.query.get("preset"))
    return _created(request, answer, cluster.session_url(request, f"/whip/{stream}/{session.id}"), session.etag)


async def whep_watch(request: web.Request) -> web.Response:
    stream = _authorize(request, "watch")
    offer = await read_text(request, SDP, "offer")
    elsewhere = await cluster.watch_elsewhere(request, stream)
    if elsewhere is not None:
        return cluster.redirect(request, elsewhere, "whep")
    session, answer = await request.app[HUB].watch(stream, offer)
    return _created(request, answer, cluster.session_url(request, f"/whep/{stream}/{session.id}"), session.etag)


async def whep_head(request: web.Request) -> web.Response:
    name = _authorize(request, "watch")
    elsewhere = await cluster.watch_elsewhere(request, name)
    if elsewhere is not None:
        return cluster.redirect(request, elsewhere, "whep")
    if name not in request.app[HUB].streams:
        raise StreamNotPublished(name)
    return web.Response(status=200, headers={"Accept-Post": SDP})


def _authorize_session(request: web.Request, role: str) -> str:
    """A publisher's session answers to a token that may publish the stream (or the operator's),
    a viewer's to one that may watch it (the operator's among them)."""
    stream = check_stream_name(request.match_info["stream"])
    auth = request.app[SETTINGS].auth
    if role == "whip" and allows(request, auth, "operate", stream):
        return stream
    authorize(request, auth, "publish" if role == "whip" else "watch", stream)
    return stream


def _session_handlers(role: str):
    async def patch(request: web.Request) -> web.Response:
        _authorize_session(request, role)
        session = request.app[HUB].session(role, request.match_info["stream"], request.match_info["session"])
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match.strip() not in ("*", session.etag):
            raise PreconditionFailed(f"If-Match {if_match} does not match the session's ETag")
        fragment = parse_fragment(await read_text(request, SDPFRAG, "ICE fragment"))
        await session.trickle(fragment)
        return web.Response(status=204)

    async def delete(request: web.Request) -> web.Response:
        _authorize_session(request, role)
        hub = request.app[HUB]
        stream, session = request.match_info["stream"], request.match_info["session"]
        if role == "whip":
            await hub.end_publish(stream, session)
        else:
            await hub.end_watch(stream, session)
        return web.Response(status=200)

    async def options(request: web.Request) -> web.Response:
        request.app[HUB].session(role, request.match_info["stream"], request.match_info["session"])
        return web.Response(status=204, headers={"Allow": "OPTIONS, PATCH, DELETE", "Accept-Patch": SDPFRAG})

    return patch, delete, options


def add_routes(app: web.Application) -> None:
    for role, post in (("whip", whip_publish), ("whep", whep_watch)):
        app.router.add_post(f"/{role}/{{stream}}", post)
        app.router.add_route("OPTIONS", f"/{role}/{{stream}}", discovery)
        patch, delete, options = _session_handlers(role)
        app.router.add_patch(f"/{role}/{{stream}}/{{session}}", patch)
        app.router.add_delete(f"/{role}/{{stream}}/{{session}}", delete)
        app.router.add_route("OPTIONS", f"/{role}/{{stream}}/{{session}}", options)
    app.router.add_route("HEAD", "/whep/{stream}", whep_head)
