"""Reading request bodies with the content-type, size and encoding checks every endpoint needs."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from livegen.api.keys import SETTINGS
from livegen.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType


async def read_text(request: web.Request, content_type: str, what: str) -> str:
    if request.content_type != content_type:
        raise UnsupportedMediaType(f"the {what} must be sent as {content_type}, not {request.content_type!r}")
    limit = request.app[SETTINGS].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the {what} is {request.content_length} bytes; the limit is {limit}")
    body = await request.read()  # aiohttp enforces the same limit for chunked bodies (413)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"the {what} is not UTF-8 text") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


async def read_json(request: web.Request) -> Any:
    """The body as JSON; `BadRequest` for anything that does not parse. Anyone can send the
    body, so every way the parser can fail is a 400, never a 500: bad syntax, nesting deeper
    than the interpreter's recursion limit, an integer over Python's digit limit, NaN."""
    text = await read_text(request, "application/json", "body")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the body is not acceptable JSON: it nests too deeply") from None
    except ValueError as exc:
        # the part before any colon: "Exceeds the limit (4300 digits) for integer string
        # conversion", without the interpreter's advice to raise the limit
        raise BadRequest(f"the body is not acceptable JSON: {str(exc).partition(':')[0][:120]}") from None


M = TypeVar("M", bound=BaseModel)


async def read_model(request: web.Request, model: type[M], empty_ok: bool = False) -> M:
    """The JSON body checked against `model`: 400 when it is not JSON, 422 naming each bad
    field when it does not fit. With `empty_ok`, no body at all reads as `{}`."""
    raw = await read_json(request) if request.can_read_body or not empty_ok else {}
    return check_model(model, raw)


def check_model(model: type[M], raw: Any) -> M:
    """`raw` (parsed JSON, or the same from another API) checked against `model`: 422 naming
    each bad field when it does not fit."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])) or "body", "message": e["msg"]} for e in exc.errors()]
        raise Unprocessable("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors) from None
