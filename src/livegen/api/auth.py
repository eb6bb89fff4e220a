"""Bearer-token checks for publishing, watching and operator actions.

Tokens are compared in constant time and never logged. A request without a token, or with one
the node does not know, is 401 with a `WWW-Authenticate: Bearer` challenge; a known token that
does not grant the action (a viewer token used to publish, stream A's token on stream B) is 403.
With no tokens configured for an action, that action is open.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web

from livegen.config import AuthSettings
from livegen.errors import Forbidden, Unauthorized


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _matches(token: str, candidates: Iterable[str | None]) -> bool:
    found = False
    for candidate in candidates:
        if candidate is not None and hmac.compare_digest(token.encode(), candidate.encode()):
            found = True  # no early exit: the time taken does not depend on which one matched
    return found


def _stream_token(tokens: dict[str, str], stream: str) -> str | None:
    return tokens.get(stream, tokens.get("*"))


def _all_tokens(auth: AuthSettings) -> list[str | None]:
    return [*auth.publish_tokens.values(), *auth.viewer_tokens.values(), auth.operator_token]


def authorize(request: web.Request, auth: AuthSettings, action: str, stream: str) -> None:
    """Raise 401/403 unless the request may do `action` ("publish", "watch", "control") on `stream`.

    `control` (API writes, ending a publish) is granted to the operator and to the stream's
    publisher; `watch` also to both of them; `upload` (backgrounds, logos) to the operator and
    every publisher.
    """
    publish = _stream_token(auth.publish_tokens, stream)
    granting: list[str | None] = [auth.operator_token]
    if action == "publish":
        granting = [publish]
        if not auth.publish_tokens:
            return
    elif action == "watch":
        if not auth.viewer_tokens:
            return
        granting += [_stream_token(auth.viewer_tokens, stream), publish]
    else:  # control, upload
        if auth.operator_token is None and not auth.publish_tokens:
            return
        granting += list(auth.publish_tokens.values()) if action == "upload" else [publish]
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(f"{action} on stream {stream!r} needs a bearer token")
    if _matches(token, granting):
        return
    if _matches(token, _all_tokens(auth)):
        raise Forbidden(f"this token does not allow {action} on stream {stream!r}")
    raise Unauthorized("the bearer token is not valid", invalid=True)
