"""`WhipPushOutput`: a stream pushed to a WHIP server (RFC 9725) without re-encoding.

Any WHIP server takes it: MediaMTX, an SFU, a CDN's ingest, another livegen node. The video is
the stream's H.264 as it was encoded once (Annex B, parameter sets in-band, pts in 1/90000); the
audio is the publisher's Opus, byte for byte. aiortc's sender packetizes the `av.Packet`s its
tracks hand out, as it does for WHEP viewers (`rtc.tracks.EncodedVideoTrack`).

Signalling: one POST of a sendonly offer (video H.264 only, audio Opus) with every local
candidate in it (no trickle), `Authorization: Bearer` when a token is given; 307/308 redirects
are followed; the answer (`201`, its candidates in the SDP) and its `Location` resource are
kept, and the resource is DELETEd when the session ends.

Failures: a refused or dropped connection, a time-out, a 5xx, ICE or DTLS failing → `retrying`,
with `flow.backoff.Backoff` (full jitter) for as long as the output lives; an answer retrying
cannot fix (400/401/403/404/405/415/422, a server without H.264) → `failed`, the status in
`last_error`. The token appears in no log, status or error text.

Threads: `offer` is called from the encoder thread (video) and the event loop (Opus); it hands
packets to the loop, into the session's bounded mailboxes, and only while the peer is connected.
Everything else runs on the loop; `stop` is the blocking wrapper of `close` for other threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from urllib.parse import urljoin, urlsplit

import aiohttp
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from livegen.config import RelaySettings
from livegen.flow.backoff import Backoff
from livegen.flow.mailbox import Mailbox
from livegen.media.output import PacketSubscription
from livegen.media.packet import MediaPacket
from livegen.observability.metrics import ByteRate
from livegen.relay.base import (
    OutputState,
    OutputStatus,
    PermanentOutputError,
    TransientOutputError,
    redact_url,
)
from livegen.rtc import aiortc_adapter
from livegen.rtc.sdp import codec_preferences, negotiated_codec

log = logging.getLogger(__name__)

SDP = "application/sdp"
VIDEO_CODEC = "H264"
AUDIO_QUEUE_PACKETS = 50
"""One second of 20 ms Opus packets; when full the oldest go (for audio, late is worse than lost)."""
MAX_REDIRECTS = 5
CLOSE_TIMEOUT_S = 5.0
DELETE_TIMEOUT_S = 3.0
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 415, 422})
"""Answers that mean a wrong URL, a rejected token or an offer the server will never take."""
ERROR_BODY_CHARS = 200


class _MailboxSourceTrack(MediaStreamTrack):
    """What aiortc's sender pulls from: the packets of one mailbox, counted as they go out;
    ends when the mailbox closes."""

    def __init__(self, kind: str, mailbox: Mailbox[av.Packet], sent: ByteRate):
        super().__init__()
        self.kind = kind
        self._mailbox = mailbox
        self._sent = sent

    async def recv(self) -> av.Packet:
        packet = await self._mailbox.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        self._sent.add(packet.size)
        return packet


class _WhipSession:
    """One attempt: a sendonly peer, its two mailboxes and tracks, and its WHIP resource."""

    def __init__(
        self, ice_servers: Sequence[RTCIceServer], queue_packets: int, want_keyframe: Callable[[], None], sent: ByteRate
    ):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
        self.video = PacketSubscription(VIDEO_CODEC, queue_packets, lambda _codec: want_keyframe())
        self.audio: Mailbox[av.Packet] = Mailbox(AUDIO_QUEUE_PACKETS)
        video = self.pc.addTransceiver(_MailboxSourceTrack("video", self.video, sent), direction="sendonly")
        video.setCodecPreferences(codec_preferences("video", [VIDEO_CODEC]))
        audio = self.pc.addTransceiver(_MailboxSourceTrack("audio", self.audio, sent), direction="sendonly")
        audio.setCodecPreferences(codec_preferences("audio", ["opus"]))
        aiortc_adapter.route_keyframe_requests(video.sender, want_keyframe)
        self.location: str | None = None
        self.states: list[str] = [self.pc.connectionState]
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        self.states.append(state)
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self.ended.set()

    @property
    def dropped(self) -> int:
        return self.video.dropped + self.audio.dropped

    async def close(self) -> None:
        self.video.close()
        self.audio.close()
        await self.pc.close()


class WhipPushOutput:
    """Pushes one stream to one WHIP endpoint; see the module docstring. Build it and call
    `start()` on the event loop `loop`; `offer()` from any thread; `await close()` on the loop
    (or `stop()` from another thread) to DELETE the session and end it."""

    wants = frozenset({"video", "opus"})

    def __init__(
        self,
        stream: str,
        url: str,
        token: str | None,
        settings: RelaySettings,
        request_keyframe: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
        *,
        ice_servers: Sequence[RTCIceServer] = (),
        name: str | None = None,
    ):
        parts = urlsplit(url)
        redacted = redact_url(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a WHIP URL is http:// or https:// with a host, not {redacted!r}")
        self.stream = stream
        self._url = url
        self._token = token or None
        self._settings = settings
        self._request_keyframe = request_keyframe
        self._loop = loop
        self._ice_servers = tuple(ice_servers)
        self.status = OutputStatus(kind="whip", url=redacted, name=name or redacted)
        self.history: list[OutputState] = [self.status.state]
        """Every state this output went through, in order (what tests assert on)."""
        self.tag = f"whip {stream}→{parts.hostname}"
        self._task: asyncio.Task[None] | None = None
        self._session: _WhipSession | None = None
        self._live = False  # read from producer threads: a stale read only costs one packet
        self._closing = False
        self._dropped_before = 0  # by earlier sessions

    # ---- any thread -----------------------------------------------------------------------
    def offer(self, item: MediaPacket) -> None:
        """Take a packet ("video": H.264; "opus"/"audio": Opus); never blocks. Packets offered
        while no peer is connected are not sent (the video restarts at a keyframe on connect)."""
        if not self._live:
            return
        try:
            self._loop.call_soon_threadsafe(self._accept, item)
        except RuntimeError:  # the loop is closed: the node is going away
            self._live = False

    def stop(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """`close()` from a thread other than the loop's, waiting up to `timeout`; whether it
        ended in time."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("WhipPushOutput.stop() blocks: on the event loop, await close()")
        if self._loop.is_closed():
            self._closing, self._live = True, False
            self._set(OutputState.STOPPED)
            return self._task is None or self._task.done()
        future = asyncio.run_coroutine_threadsafe(self.close(timeout), self._loop)
        try:
            return future.result(timeout + 1.0)
        except concurrent.futures.TimeoutError:
            return False

    # ---- loop -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None and not self._closing:
            self._task = self._loop.create_task(self._run(), name=self.tag)

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """End the push: DELETE the WHIP session, close the peer; whether that took less than
        `timeout`. Leaves the output `stopped`."""
        self._closing, self._live = True, False
        finished = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=timeout)
            finished = bool(done)
            if not finished:
                log.warning("[%s] did not end within %.1f s", self.tag, timeout)
        self._set(OutputState.STOPPED)
        return finished

    def _accept(self, item: MediaPacket) -> None:
        session = self._session
        if session is None or not self._live:
            return
        if item.kind == "video":
            session.video.offer([item.packet])
        else:
            session.audio.put(item.packet)
        self.status.packets_dropped = self._dropped_before + session.dropped

    def _set(self, state: OutputState, error: str | None = None) -> None:
        if self.status.state == OutputState.STOPPED:
            return
        self.status.set(state, error)
        if self.history[-1] != state:
            self.history.append(state)

    async def _run(self) -> None:
        settings = self._settings
        backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s)
        timeout = aiohttp.ClientTimeout(total=settings.connect_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    await self._push(http, backoff)
                    error = "the connection to the WHIP server closed"
                except PermanentOutputError as exc:
                    log.warning("[%s] failed: %s", self.tag, exc)
                    self._set(OutputState.FAILED, str(exc))
                    return
                except TransientOutputError as exc:
                    error = str(exc)
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    error = self._describe(exc)
                except Exception as exc:  # a live output keeps trying; the traceback is logged
                    log.exception("[%s] unexpected error", self.tag)
                    error = self._scrub(f"{type(exc).__name__}: {exc}")
                self._set(OutputState.RETRYING, error)
                delay = backoff.next_delay()
                log.info("[%s] %s; retrying in %.1f s", self.tag, error, delay)
                await asyncio.sleep(delay)

    async def _push(self, http: aiohttp.ClientSession, backoff: Backoff) -> None:
        """One session, from the offer until the connection ends."""
        session = _WhipSession(self._ice_servers, self._settings.queue_packets, self._request_keyframe, self.status.sent)
        self._session = session
        try:
            await session.pc.setLocalDescription(await session.pc.createOffer())
            answer, session.location = await self._post_offer(http, session.pc.localDescription.sdp)
            try:
                await session.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            except Exception as exc:
                raise PermanentOutputError(f"the WHIP server's answer is unusable: {exc or type(exc).__name__}") from None
            if negotiated_codec(answer, "video") != VIDEO_CODEC:
                raise PermanentOutputError("the WHIP server did not accept H.264 video")
            await self._wait_connected(session)
            self._live = True
            self._set(OutputState.LIVE)
            backoff.reset()
            log.info("[%s] live", self.tag)
            self._request_keyframe()
            await session.ended.wait()
        finally:
            self._live = False
            self._session = None
            await self._end(http, session)

    async def _wait_connected(self, session: _WhipSession) -> None:
        limit = self._settings.connect_timeout_s
        waits = [asyncio.ensure_future(session.connected.wait()), asyncio.ensure_future(session.ended.wait())]
        try:
            await asyncio.wait(waits, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if session.connected.is_set() and not session.ended.is_set():
            return
        if session.ended.is_set():
            raise TransientOutputError(f"ICE/DTLS with the WHIP server failed ({session.pc.connectionState})")
        raise TransientOutputError(f"not connected to the WHIP server within {limit:g} s")

    async def _end(self, http: aiohttp.ClientSession, session: _WhipSession) -> None:
        """DELETE the session's resource (best effort, bounded) and close its peer."""
        self._dropped_before += session.dropped
        self.status.packets_dropped = self._dropped_before
        location, session.location = session.location, None
        try:
            if location is not None:
                try:
                    async with http.delete(
                        location, headers=self._auth(), timeout=aiohttp.ClientTimeout(total=DELETE_TIMEOUT_S)
                    ) as response:
                        if response.status >= 300:
                            log.info("[%s] DELETE of the session answered %d", self.tag, response.status)
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    log.info("[%s] DELETE of the session failed: %s", self.tag, self._describe(exc))
        finally:
            await session.close()
            log.debug("[%s] session states %s", self.tag, session.states)

    # ---- signalling -------------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def _post_offer(self, http: aiohttp.ClientSession, offer: str) -> tuple[str, str | None]:
        """POST the offer, following 307/308; the answer and the session's absolute URL."""
        url = self._url
        headers = {"Content-Type": SDP, **self._auth()}
        for _ in range(MAX_REDIRECTS + 1):
            async with http.post(url, data=offer, headers=headers, allow_redirects=False) as response:
                if response.status in (307, 308):
                    url = self._redirect(url, response.headers.get("Location"))
                    continue
                body = await response.text()
                if response.status in PERMANENT_STATUSES:
                    raise PermanentOutputError(self._answered(response, body))
                if response.status not in (200, 201) or not body.lstrip().startswith("v=0"):
                    raise TransientOutputError(self._answered(response, body))
                location = response.headers.get("Location")
                if location is None:
                    log.warning("[%s] the answer has no Location: the session cannot be DELETEd", self.tag)
                return body, None if location is None else urljoin(url, location)
        raise PermanentOutputError(f"the WHIP server redirected more than {MAX_REDIRECTS} times")

    def _redirect(self, current: str, location: str | None) -> str:
        if not location:
            raise PermanentOutputError("the WHIP server redirected without a Location")
        target = urljoin(current, location)
        scheme = urlsplit(target).scheme
        if scheme not in ("http", "https"):
            raise PermanentOutputError(f"the WHIP server redirected to a {scheme or 'relative'} URL")
        if self._token and urlsplit(current).scheme == "https" and scheme == "http":
            raise PermanentOutputError("the WHIP server redirected from https to http; the token stays unsent")
        log.info("[%s] redirected to %s", self.tag, redact_url(target))
        return target

    def _answered(self, response: aiohttp.ClientResponse, body: str) -> str:
        text = f"the WHIP server answered {response.status} {response.reason or ''}".rstrip()
        readable = response.content_type.startswith("text/") or response.content_type.endswith("json")
        detail = " ".join(body.split())[:ERROR_BODY_CHARS] if readable else ""
        return self._scrub(f"{text}: {detail}" if detail else text)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
            return f"cannot connect to {exc.host}:{exc.port} ({reason})"
        if isinstance(exc, asyncio.TimeoutError):
            return f"the WHIP server did not answer within {self._settings.connect_timeout_s:g} s"
        return self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _scrub(self, text: str) -> str:
        """`text` without the token or the unredacted URL (which may carry a key)."""
        text = text.replace(self._url, self.status.url)
        return text.replace(self._token, "***") if self._token else text
