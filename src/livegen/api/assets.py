"""Uploads of background images, videos and logos: `POST /api/assets` with the file as the body.

The body's `Content-Type` says what it is (image/png, image/jpeg, image/webp, video/mp4,
video/webm, video/quicktime); the file is size-checked while it streams in (413), decoded in
full off the event loop (422 if it is not what it claims), and kept under its content hash.
The answer's `ref` (`upload:<id>`) is what effect parameters name it by.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from livegen.api.auth import authorize
from livegen.api.keys import ASSETS, SETTINGS
from livegen.errors import PayloadTooLarge

CHUNK = 64 * 1024


async def read_upload(request: web.Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit`."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the upload is {request.content_length} bytes; the limit is {limit}")
    chunks, size = [], 0
    while chunk := await request.content.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the upload is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def upload(request: web.Request) -> web.Response:
    authorize(request, request.app[SETTINGS].auth, "upload", "*")
    store = request.app[ASSETS]
    content_type = request.content_type  # checked by the store: 415 for anything else
    data = await read_upload(request, store.max_bytes)
    asset = await asyncio.get_running_loop().run_in_executor(None, store.save_upload, data, content_type)
    return web.json_response(asset.describe(), status=201, headers={"Location": f"/api/assets/{asset.ref}"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/assets", upload)
