"""Errors as RFC 9457 problem+json answers with exact status codes, never a 200 with an error."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import hdrs, web, web_urldispatcher
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError

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


class ParserErrorLog(logging.LoggerAdapter):
    """aiohttp's server log (`aiohttp.server`) for the app's connections, where a request that
    aiohttp's HTTP parser refuses before any handler sees it (a URL or header line over its
    limit, a malformed request line or chunk) is one short warning instead of a traceback:
    anyone can send those, as often as they like, and a traceback each floods the log.
    aiohttp still answers them itself (400, the connection closed). Other errors pass through.

    Given to the app as `handler_args={"logger": ParserErrorLog()}`, so every runner of the app
    (`web.run_app`, `web.AppRunner`) uses it."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            # e.g. "Error handling request from 10.0.0.7: LineTooLong (400): Got more than 8190 bytes…"
            summary = " ".join(str(exc_info.message).split())[:120]
            self.warning(
                f"{msg}: %s (%d): %s", *args, type(exc_info).__name__, exc_info.code, summary, **kwargs
            )
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


_AIOHTTP_EXPECT_HANDLER = getattr(web_urldispatcher, "_default_expect_handler", None)


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """aiohttp's check of a request's `Expect` header, which runs before any middleware:
    `100-continue` is served as aiohttp serves it, any other expectation is a 417 problem.
    aiohttp's own refusal quotes the header into its text, which fails (a 500 and a traceback
    in the log) when the header holds bytes that are not UTF-8: anyone can send that."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11 and expect.lower() != "100-continue":
        return problem_response(417, "Expectation failed", f"unknown Expect: {ascii(expect)[:100]}")
    if _AIOHTTP_EXPECT_HANDLER is not None:
        return await _AIOHTTP_EXPECT_HANDLER(request)
    return None


def answer_expectations() -> None:
    """Make `expect_handler` the one aiohttp uses for every route without one of its own,
    including the routes it makes for 404 and 405 (which no app setting reaches). Process-wide
    and idempotent; a no-op if this aiohttp has no such default any more."""
    if _AIOHTTP_EXPECT_HANDLER is not None:
        web_urldispatcher._default_expect_handler = expect_handler  # type: ignore[attr-defined]
