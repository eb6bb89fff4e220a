"""CORS for WHIP/WHEP and the API, so players and publishers on other origins can use the node."""

from __future__ import annotations

from aiohttp import web

from livegen.api.problems import Handler

EXPOSED = "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After, WWW-Authenticate"
ALLOWED_HEADERS = "Authorization, Content-Type, If-Match"
ALLOWED_METHODS = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"


def cors_middleware(origins: list[str]):
    allow_any = "*" in origins

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        origin = request.headers.get("Origin")
        if origin and (allow_any or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED
            if not allow_any:
                response.headers["Vary"] = "Origin"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
                response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        return response

    return cors
