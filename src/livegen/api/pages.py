"""The web pages: webcam page at `/`, viewer page at `/watch/{stream}`, operator page at `/ops`,
assets under `/static/`."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from livegen.errors import NotFound
from livegen.hub.registry import check_stream_name


def add_routes(app: web.Application, web_dir: Path) -> None:
    def page(name: str):
        async def handler(request: web.Request) -> web.FileResponse:
            if "stream" in request.match_info:
                check_stream_name(request.match_info["stream"])
            path = web_dir / name
            if not path.is_file():
                raise NotFound(f"page {name} is not installed")
            return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

        return handler

    app.router.add_get("/", page("index.html"))
    app.router.add_get("/watch/{stream}", page("watch.html"))
    app.router.add_get("/ops", page("ops.html"))
    if web_dir.is_dir():
        app.router.add_static("/static/", web_dir, append_version=False)
