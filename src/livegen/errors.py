"""The one error tree of livegen.

Every error a client can cause knows its HTTP status, so the API layer turns it into a
problem+json answer (RFC 9457) without guessing. Errors that are not client errors are bugs and
surface as 500 through the API's middleware.
"""

from __future__ import annotations

from typing import Any


class LivegenError(Exception):
    """Base of all livegen errors. `status` is the HTTP status the API answers with."""

    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class ConfigError(LivegenError):
    """Settings or a preset file are invalid; raised at start-up, names the offending key."""

    title = "Invalid configuration"


class BadRequest(LivegenError):
    status = 400
    title = "Bad request"


class InvalidSdp(BadRequest):
    title = "Invalid SDP"


class Unauthorized(LivegenError):
    """No token, or a token the node does not know."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, *, invalid: bool = False):
        challenge = 'Bearer realm="livegen"' + (', error="invalid_token"' if invalid else "")
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(LivegenError):
    """A valid token that does not grant this action."""

    status = 403
    title = "Forbidden"


class NotFound(LivegenError):
    status = 404
    title = "Not found"


class Conflict(LivegenError):
    status = 409
    title = "Conflict"


class StreamBusy(Conflict):
    title = "Stream already has a publisher"


class StreamNotPublished(Conflict):
    title = "Stream is not being published"

    def __init__(self, stream: str, retry_after: int = 2):
        super().__init__(
            f"nobody publishes stream {stream!r} yet; retry later",
            headers={"Retry-After": str(retry_after)},
        )


class PreconditionFailed(LivegenError):
    """If-Match named an entity tag the session does not have."""

    status = 412
    title = "Precondition failed"


class PayloadTooLarge(LivegenError):
    status = 413
    title = "Payload too large"


class UnsupportedMediaType(LivegenError):
    status = 415
    title = "Unsupported media type"


class Unprocessable(LivegenError):
    """Well-formed but unacceptable: unknown preset, bad effect parameter, no video in offer."""

    status = 422
    title = "Unprocessable request"


class AtCapacity(LivegenError):
    status = 503
    title = "At capacity"

    def __init__(self, detail: str, retry_after: int = 5):
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class NodeDraining(AtCapacity):
    """The node is shutting down: live streams go on, new publishes go to another node."""

    title = "Node shutting down"
