"""The API's side of a cluster (`livegen.cluster`): where a WHIP or WHEP request belongs, the
307 that sends it there, session URLs other nodes' clients can reach, and the cluster's streams.

Every request is authorized by the node it reaches before any routing (all nodes of a cluster
share their auth settings): a client without a valid token learns nothing about the cluster,
not even which node holds a stream. Redirects are absolute URLs (the target's `public_url`, the
same path and query), answered as responses so CORS headers go on them too. Without a cluster
every helper here is a no-op and the node behaves as a lone node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

from aiohttp import web

from livegen.api.keys import CLUSTER, HUB
from livegen.errors import Unprocessable


def redirect(request: web.Request, base_url: str, endpoint: str) -> web.Response:
    """307 to the same path and query on the node at `base_url`: the client repeats the same
    request (method, body, headers) there."""
    request.app[CLUSTER].redirects[endpoint] += 1
    return web.Response(status=307, headers={"Location": base_url + request.path_qs})


async def publish_elsewhere(request: web.Request, stream: str) -> str | None:
    """Base URL of the node a publish of `stream` should go to instead of this one: the live
    node that holds the name, which answers as a lone node would (a publisher coming back to a
    stream on its slate resumes it there, a second publisher of a live one gets 409); else,
    when this node is full and another has room, the least-loaded of those. None: publish here
    (a full or draining node answers 503). A node draining for shutdown sends new publishers on
    like a full one."""
    cluster, hub = request.app.get(CLUSTER), request.app[HUB]
    if cluster is None or stream in hub.streams:
        return None  # a stream held here (on its slate, or replaced) resumes here
    owner = await cluster.owner_of(stream)
    if owner is not None and owner.id != cluster.node_id:
        return owner.url
    if not (hub.at_capacity or hub.draining):
        return None
    target = await cluster.least_loaded_with_room()
    return None if target is None else target.url


async def watch_elsewhere(request: web.Request, stream: str) -> str | None:
    """Base URL of the node that holds `stream` when it is another node; None: answer here."""
    cluster, hub = request.app.get(CLUSTER), request.app[HUB]
    if cluster is None or stream in hub.streams:
        return None
    owner = await cluster.owner_of(stream)
    return None if owner is None or owner.id == cluster.node_id else owner.url


@asynccontextmanager
async def claimed(request: web.Request, stream: str) -> AsyncIterator[None]:
    """Hold the cluster-wide claim on `stream` around a publish (`StreamBusy` when another live
    node holds it); see `ClusterRegistry.publishing`."""
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        yield
        return
    async with cluster.publishing(stream):
        yield


def session_url(request: web.Request, path: str) -> str:
    """A session's `Location`: relative on a lone node; in a cluster absolute, on this node's
    public URL, so the client's PATCH and DELETE reach this node whichever node or load
    balancer it first asked."""
    cluster = request.app.get(CLUSTER)
    return path if cluster is None else cluster.public_url + path


async def cluster_streams(request: web.Request) -> web.Response:
    """`GET /api/streams?scope=cluster`: every stream a live node of the cluster holds, with
    that node's id and URL. When Redis cannot be asked, this node's own, with `complete: false`."""
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        raise Unprocessable("scope=cluster: this node is not in a cluster (cluster.redis_url is not set)")
    found = await cluster.streams()
    if found is None:
        names = sorted(request.app[HUB].streams)
        own = [{"name": name, "node": cluster.node_id, "url": cluster.public_url} for name in names]
        return web.json_response({"scope": "cluster", "complete": False, "streams": own})
    return web.json_response({"scope": "cluster", "complete": True, "streams": [asdict(s) for s in found]})
