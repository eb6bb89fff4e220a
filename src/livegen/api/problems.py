"""Errors as RFC 9457 problem+json answers with exact status codes, never a 200 with an error."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from livegen.errors import LivegenError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_DROP_HEADERS = {"content-type", "content-length"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(
    status: int,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **(extra or {})}
    kept = {k: v for k, v in (headers or {}).items() if k.lower() not in _DROP_HEADERS}
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_JSON, headers=kept
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LivegenError as exc:
        body = exc.problem()
        extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")}
        return problem_response(exc.status, exc.title, exc.detail, exc.headers, extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return problem_response(exc.status, exc.reason, detail, exc.headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(500, "Internal error", "the node failed on this request")
