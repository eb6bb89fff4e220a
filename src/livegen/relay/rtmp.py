"""`RtmpOutput`: a stream pushed to an RTMP or RTMPS ingest (YouTube, Twitch, nginx-rtmp, …) as
FLV, its H.264 as encoded once and its AAC as encoded once. The session itself is
`relay.rtmp_connection.RtmpConnection`.

URLs: `rtmp://host[:port]/app/key` (port 1935) and `rtmps://host[:port]/app/key` (port 443,
certificate verified). `check_url` vets one before anything starts; `srt://` is refused there:
the FFmpeg in PyAV's wheels has no libsrt.

Errors, and what the output does with them:

| what happened | it is | state |
|---|---|---|
| malformed or unsupported URL (`check_url`) | permanent | refused before start (the API: 422) |
| connection refused, reset, broken pipe, closed while live | transient | `retrying` |
| no answer within `connect_timeout_s` (connect, handshake, any reply, a stalled send) | transient | `retrying` |
| host name does not resolve (DNS may be down for a while; the lookup itself is not timed) | transient | `retrying` |
| the server rejects `connect` (wrong application: nginx-rtmp hangs up, others send `_error`) | permanent | `failed` |
| the server rejects `publish` (an error `onStatus`, or it hangs up: a wrong or unauthorised key) | permanent | `failed` |
| `NetStream.Publish.BadName` (the key is still publishing, e.g. our own previous session) | transient | `retrying` |
| any rejection once this output has been live with the same URL (a restarting server) | transient | `retrying` |
| the server's TLS certificate does not verify | permanent | `failed` |

Transient errors are retried with the relay backoff (`backoff_base_s`, `backoff_cap_s`, full
jitter) for as long as the output runs (the backoff starts over once it was live 10 s); `failed`
keeps the reason in `last_error`. A server hanging up instead of answering cannot be told from
one going down at that moment, so the rule is: a hang-up in answer to `connect` or `publish`
is permanent until the output was once live, transient after.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

from av.stream import Stream

from livegen.config import RelaySettings
from livegen.flow.backoff import Backoff
from livegen.relay.base import PermanentOutputError, redact_url
from livegen.relay.muxer import MuxingOutput
from livegen.relay.rtmp_connection import RtmpConnection, RtmpRejected, RtmpTarget

log = logging.getLogger(__name__)


class InvalidOutputUrl(PermanentOutputError, ValueError):
    """An output URL this node cannot push to; the message says why (never quoting a key)."""


def check_url(url: str) -> tuple[str, str]:
    """("rtmp", the URL redacted) for a usable rtmp:// or rtmps:// URL; raises `InvalidOutputUrl`
    saying what is wrong otherwise."""
    scheme = url.partition(":")[0].lower()
    if scheme == "srt":
        raise InvalidOutputUrl(
            "srt:// outputs are not supported: the FFmpeg in PyAV's wheels is built without libsrt; "
            "use rtmp://, rtmps:// or WHIP"
        )
    if scheme not in ("rtmp", "rtmps"):
        raise InvalidOutputUrl(f"unsupported output URL scheme {scheme!r}: use rtmp:// or rtmps://")
    try:
        RtmpTarget.parse(url)
    except ValueError as exc:
        raise InvalidOutputUrl(f"{exc}: {redact_url(url)}") from None
    return "rtmp", redact_url(url)


class RtmpOutput(MuxingOutput):
    kind = "rtmp"
    format_name = "flv"

    def __init__(
        self,
        stream: str,
        url: str,
        audio_template: Stream,
        request_keyframe: Callable[[], None],
        settings: RelaySettings,
        *,
        name: str | None = None,
    ):
        _, shown = check_url(url)
        super().__init__(
            stream,
            shown,
            audio_template,
            request_keyframe,
            name=name,
            queue_packets=settings.queue_packets,
            backoff=Backoff(settings.backoff_base_s, max(settings.backoff_cap_s, settings.backoff_base_s)),
        )
        self._target = RtmpTarget.parse(url)
        self._timeout_s = settings.connect_timeout_s
        self._connection: RtmpConnection | None = None

    def connect(self) -> None:
        self._drop_connection()  # one a container never took (its keyframe never came)
        connection = RtmpConnection(self._target, self._timeout_s)
        self._connection = connection
        try:
            connection.open()
        except BaseException:
            self._drop_connection()
            raise
        log.info("[%s] rtmp output %s: publishing", self.stream, self.status.url)

    def open_target(self) -> Any:
        if self._connection is None:  # a new container on the same output: a new session
            self.connect()
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close(goodbye=False)

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._drop_connection()

    def container_options(self) -> dict[str, str]:
        # Each packet goes out as it is muxed (the connection is no seekable file to patch a
        # duration into); a lost audio feed holds video back at most half a second.
        return {"flvflags": "no_duration_filesize", "flush_packets": "1", "max_interleave_delta": "500000"}

    def close_target(self, target: Any, clean: bool) -> None:
        target.close(goodbye=clean)
        self._connection = None

    def abort_io(self) -> None:
        connection = self._connection
        if connection is not None:
            connection.abort()

    def is_permanent(self, exc: BaseException) -> bool:
        if isinstance(exc, RtmpRejected):
            # once live with this URL, a rejection is a server restarting or still holding our
            # previous session, not a wrong URL
            return exc.code != "NetStream.Publish.BadName" and not self.ever_live
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        return super().is_permanent(exc)
