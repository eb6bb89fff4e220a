"""Bearer-token checks for publishing, watching and operator actions.

Tokens are compared in constant time and never logged. A request without a token, or with one
the node does not know, is 401 with a `WWW-Authenticate: Bearer` challenge; a known token that
does not grant the action (a viewer token used to publish, stream A's token on stream B) is 403.
With no tokens configured for an action, that action is open.

Who may do what:
- `publish` a stream: its publish token (its own, or the `"*"` one when it has none of its own).
- `watch`: a viewer token for the stream, the token that may publish it, or the operator's.
- `control` one stream (API writes, its viewers' ids): the operator, or the token that may
  publish that stream.
- `control` of `NODE` (listing every stream, `/metrics`, `/api/node`, every recording) and
  `operate` (ending a stream's viewers by id): the operator only; no publish token grants these,
  not even `"*"`.
- `upload`: the operator or any publish token.
- `process` (frames sent to the gRPC frame API, `livegen.api.rpc`): the same as `upload`.
A WHIP/WHEP session URL is a capability on top of this: see `api.webrtc`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web

from livegen.config import AuthSettings
from livegen.errors import Forbidden, Unauthorized

NODE = "*"
"""The `stream` of a node-wide action: never a stream name (`check_stream_name` refuses it)."""


def bearer_token(request: web.Request) -> str | None:
    return parse_bearer(request.headers.get("Authorization", ""))


def parse_bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (an HTTP header, gRPC metadata)."""
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
    if stream == NODE:
        return None  # the "*" token may publish any one stream, never act on all of them
    return tokens.get(stream, tokens.get("*"))


def _all_tokens(auth: AuthSettings) -> list[str | None]:
    return [*auth.publish_tokens.values(), *auth.viewer_tokens.values(), auth.operator_token]


def _granting(auth: AuthSettings, action: str, stream: str) -> list[str | None] | None:
    """The tokens that grant `action` on `stream`, or None when the action is open."""
    publish = _stream_token(auth.publish_tokens, stream)
    if action == "publish":
        return [publish] if auth.publish_tokens else None
    if action == "watch":
        if not auth.viewer_tokens:
            return None
        return [auth.operator_token, _stream_token(auth.viewer_tokens, stream), publish]
    if auth.operator_token is None and not auth.publish_tokens:
        return None
    if action in ("upload", "process"):
        return [auth.operator_token, *auth.publish_tokens.values()]
    if action == "control":
        return [auth.operator_token, publish]
    if action == "operate":
        return [auth.operator_token]
    raise ValueError(f"unknown action {action!r}")


def authorize(request: web.Request, auth: AuthSettings, action: str, stream: str) -> None:
    """Raise 401/403 unless the request may do `action` ("publish", "watch", "control",
    "operate", "upload", "process") on `stream` (`NODE` for node-wide reads); see the module's
    docstring."""
    authorize_token(bearer_token(request), auth, action, stream)


def authorize_token(token: str | None, auth: AuthSettings, action: str, stream: str) -> None:
    """`authorize` for a token that came some other way than an HTTP request (gRPC metadata)."""
    granting = _granting(auth, action, stream)
    if granting is None:
        return
    where = "this node" if stream == NODE else f"stream {stream!r}"
    if token is None:
        raise Unauthorized(f"{action} on {where} needs a bearer token")
    if _matches(token, granting):
        return
    if _matches(token, _all_tokens(auth)):
        raise Forbidden(f"this token does not allow {action} on {where}")
    raise Unauthorized("the bearer token is not valid", invalid=True)


def allows(request: web.Request, auth: AuthSettings, action: str, stream: str) -> bool:
    """Whether `authorize` would let the request through, for answers that show more to some."""
    granting = _granting(auth, action, stream)
    if granting is None:
        return True
    token = bearer_token(request)
    return token is not None and _matches(token, granting)


def token_identity(request: web.Request, auth: AuthSettings) -> str | None:
    """Who the request's bearer token is, as a name that can be stored and shown (never the
    token): "operator", or "publish:<stream>" for the publish token configured for <stream>
    (or "*"); None without a token the node knows. Things a token creates (file jobs) are kept
    under this name, so its holder finds them again and another publisher does not."""
    token = bearer_token(request)
    if token is None:
        return None
    if _matches(token, [auth.operator_token]):
        return "operator"
    for stream, candidate in sorted(auth.publish_tokens.items()):
        if _matches(token, [candidate]):
            return f"publish:{stream}"
    return None
