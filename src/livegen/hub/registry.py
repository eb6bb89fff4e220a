"""`StreamHub`: the registry of live streams and the sole owner of the stream map.

Admission (names, capacity, a publisher per stream, offered frame rates), publishing, watching,
ending, and the sessions' own ends all go through here, on the asyncio loop. The hub builds a
stream's parts (its chain off the loop, pipeline, output, audio relay), gives the publisher's
session the pipeline and the audio relay as its sinks and the viewers' sessions the stream as
their feed, and attaches the pipeline to the device worker. Nothing here touches pixels.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer

from livegen.config import EffectSpec, Settings
from livegen.engine.pipeline import StreamPipeline
from livegen.engine.presets import PresetLibrary
from livegen.engine.worker import DeviceWorker
from livegen.errors import (
    AtCapacity,
    BadRequest,
    LivegenError,
    NodeDraining,
    NotFound,
    StreamBusy,
    StreamNotPublished,
    Unprocessable,
)
from livegen.hub.control import change_chain, wanted_spec
from livegen.hub.outputs import StreamOutputs
from livegen.hub.stream import Stream, StreamSnapshot, VideoDelay
from livegen.media.audio import AudioRelay
from livegen.media.convert import frame_to_rgb
from livegen.media.output import StreamOutput
from livegen.media.slate import SlateSource, slate_picture
from livegen.relay.base import redact_url
from livegen.relay.upload import RecordingUploader
from livegen.rtc.ingest import IngestSession
from livegen.rtc.peer import CLOSE_TIMEOUT_S, PeerSession
from livegen.rtc.sdp import parse_media_sections, require_video
from livegen.rtc.viewer import ViewerSession

log = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
STALE_PUBLISHER_S = 2.0
"""A publisher that sent no media for this long is replaced by a new publish of its stream
(which the API has checked for the stream's publish token) instead of answering 409."""


def _is_publisher(stream: Stream, session_id: str) -> bool:
    """Whether `session_id` (a capability from a Location URL) is the stream's publisher's,
    compared in constant time."""
    return stream.ingest is not None and secrets.compare_digest(stream.ingest.id.encode(), session_id.encode())


def check_stream_name(name: str) -> str:
    if not STREAM_NAME.fullmatch(name):
        raise BadRequest(f"invalid stream name {name!r}: use 1-64 of A-Z a-z 0-9 _ -")
    return name


class StreamHub:
    def __init__(
        self, settings: Settings, worker: DeviceWorker, presets: PresetLibrary, uploader: RecordingUploader | None = None
    ):
        self.settings = settings
        self.uploader = uploader
        """Where finished recordings go (object storage), when the node has one."""
        self.worker = worker
        self.presets = presets
        self.streams: dict[str, Stream] = {}
        self._negotiating: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stream_ended: list[Callable[[str], None]] = []
        self.drain_started: list[Callable[[], None]] = []
        """Called when `drain` begins (the cluster says the node takes no new publishers)."""
        """Called (on the loop, must not block) with a stream's name once it has ended, however
        it ended; the cluster registry releases the name's claim."""
        self.draining = False
        """Set by `drain()`: the node is shutting down and takes no new publishers."""

    # ---- reading ------------------------------------------------------------------------------
    @property
    def at_capacity(self) -> bool:
        return len(self.streams) + len(self._negotiating) >= self.settings.rtc.max_streams

    def stream(self, name: str) -> Stream:
        stream = self.streams.get(check_stream_name(name))
        if stream is None:
            raise NotFound(f"no stream {name!r}")
        return stream

    def snapshots(self) -> Iterator[StreamSnapshot]:
        for stream in list(self.streams.values()):
            yield stream.snapshot()

    def session(self, role: str, name: str, session_id: str) -> PeerSession:
        """The live WHIP ("whip") or WHEP ("whep") session with this id on stream `name`."""
        stream = self.streams.get(name)
        found: PeerSession | None = None
        if stream is not None:
            if role == "whip":
                found = stream.ingest if _is_publisher(stream, session_id) else None
            else:
                found = stream.viewers.get(session_id)
        if found is None:
            raise NotFound(f"no {role.upper()} session {session_id!r} on stream {name!r}")
        return found

    # ---- sessions -----------------------------------------------------------------------------
    def _rtc_config(self) -> RTCConfiguration:
        servers = [
            RTCIceServer(urls=s.url, username=s.username, credential=s.credential)
            for s in self.settings.rtc.ice_servers
        ]
        return RTCConfiguration(iceServers=servers)

    def _session_kw(self) -> dict[str, Any]:
        rtc = self.settings.rtc
        return {
            "on_end": self._session_ended,
            "connect_timeout_s": rtc.connect_timeout_s,
            "advertised_addresses": rtc.advertised_addresses,
        }

    # ---- publishing (WHIP) --------------------------------------------------------------------
    async def publish(self, name: str, offer: str, preset: str | None = None) -> tuple[IngestSession, str]:
        check_stream_name(name)
        if self.draining:
            raise NodeDraining("the node is shutting down: publish to another node")
        held = self.streams.get(name)
        if held is not None and name not in self._negotiating:
            if held.ingest is None:
                return await self._resume(held, offer)
            if held.ingest.silent_s() >= STALE_PUBLISHER_S:  # crashed, its peer not yet timed out
                return await self._resume(held, offer, replacing=held.ingest)
        if name in self.streams or name in self._negotiating:
            raise StreamBusy(f"stream {name!r} already has a publisher")
        if self.at_capacity:
            raise AtCapacity(f"the node runs its maximum of {self.settings.rtc.max_streams} streams")
        sections = parse_media_sections(offer)
        require_video(sections, sending=True)
        rtc = self.settings.rtc
        for section in sections:
            if section.kind == "video" and section.framerate and section.framerate > rtc.max_fps:
                raise Unprocessable(f"the offer declares {section.framerate:g} fps; this node accepts at most {rtc.max_fps:g}")
        spec = self.presets.spec(preset)
        loop = asyncio.get_running_loop()
        self._negotiating.add(name)  # reserved before the first await: a racing POST gets 409
        chain = session = audio = None
        try:
            chain = await loop.run_in_executor(None, self.presets.build, spec)
            output = StreamOutput(name, self.settings.output, loop)
            pipeline = StreamPipeline(name, chain, emit=output.publish, max_fps=rtc.max_fps)
            delay = VideoDelay(pipeline, output)
            audio = AudioRelay(loop, delay if self.settings.output.audio_sync else (lambda: 0.0))
            outputs = StreamOutputs(name, output, audio, self.settings, self.uploader)
            stream = Stream(name, spec, pipeline, output, audio, delay, outputs)
            session = stream.ingest = self._ingest_session(stream)
            answer = await session.negotiate(offer)
        except BaseException:
            for part in (audio, chain):
                if part is not None:
                    part.close()
            if session is not None:
                await session.close()
            raise
        finally:
            self._negotiating.discard(name)
        self.streams[name] = stream
        self.worker.attach(pipeline)
        log.info("[%s] publishing with preset %s", session.tag, chain.preset)
        self._start_configured_outputs(stream)
        return session, answer

    def _start_configured_outputs(self, stream: Stream) -> None:
        """What the config asks for every new stream: its `outputs` and `recording.auto`. One
        that cannot start is logged and skipped; the publish goes on."""
        urls = [*self.settings.outputs.get("*", []), *self.settings.outputs.get(stream.name, [])]
        for url in urls:
            try:
                stream.outputs.open(url)
            except LivegenError as exc:
                log.error("[%s] configured output %s not started: %s", stream.tag, redact_url(url), exc.detail)
        if self.settings.recording.auto:
            try:
                stream.outputs.record()
            except LivegenError as exc:
                log.error("[%s] automatic recording not started: %s", stream.tag, exc.detail)

    def _ingest_session(self, stream: Stream) -> IngestSession:
        rtc = self.settings.rtc
        return IngestSession(
            stream.name, self._rtc_config(), stream.pipeline, stream.audio,
            max_size=(rtc.max_width, rtc.max_height), **self._session_kw(),
        )

    async def _resume(
        self, stream: Stream, offer: str, replacing: IngestSession | None = None
    ) -> tuple[IngestSession, str]:
        """A publisher takes over a stream: one holding on its slate, or (`replacing`) one whose
        publisher has sent nothing for `STALE_PUBLISHER_S`. Same pipeline, output, viewers,
        outputs and recordings; the slate stops, or the silent session is closed, once the new
        session is negotiated."""
        sections = parse_media_sections(offer)
        require_video(sections, sending=True)
        self._negotiating.add(stream.name)
        session = self._ingest_session(stream)
        try:
            answer = await session.negotiate(offer)
        except BaseException:
            await session.close()
            raise
        finally:
            self._negotiating.discard(stream.name)
        if self.streams.get(stream.name) is not stream:  # the grace time ran out meanwhile
            await session.close()
            raise StreamNotPublished(stream.name)
        stream.ingest, stream.holding_since = session, None
        await self._stop_slate(stream)
        stream.output.encoder.restart_timeline()
        if replacing is not None:
            await replacing.close()  # closed first: its end no longer concerns the stream
            log.info("[%s] replaced a publisher silent for %.1f s", session.tag, replacing.silent_s())
        else:
            log.info("[%s] publisher back after holding on the slate", session.tag)
        return session, answer

    async def _hold(self, stream: Stream) -> None:
        """The publisher dropped: keep the stream up on its slate for `relay.grace_s`, so its
        viewers, outputs and recordings continue if the publisher comes back in time."""
        relay = self.settings.relay
        stream.ingest, stream.holding_since = None, time.time()
        last = stream.output.last_frame
        loop = asyncio.get_running_loop()
        picture = await loop.run_in_executor(None, self._slate_picture, last)
        if self.streams.get(stream.name) is not stream or stream.ingest is not None:
            return  # ended or resumed while the picture was made
        stream.output.encoder.restart_timeline()
        stream.slate = SlateSource(stream.name, picture, stream.output.publish, fps=self.settings.rtc.max_fps)
        stream.slate.start()
        log.info("[%s] publisher gone: holding on the slate for %.0f s", stream.tag, relay.grace_s)
        self._spawn(self._expire(stream, stream.holding_since), f"grace {stream.name}")

    def _slate_picture(self, last: av.VideoFrame | None) -> np.ndarray:
        relay = self.settings.relay
        image = None
        if relay.slate_image is not None and self.presets.context.assets is not None:
            try:
                image = self.presets.context.assets.load_image(relay.slate_image)
            except Exception as exc:  # a slate must never fail the stream: fall back to the dim frame
                log.warning("slate image %s unusable (%s); dimming the last frame", relay.slate_image, exc)
        return slate_picture(None if last is None else frame_to_rgb(last), relay.slate_message, image)

    async def _expire(self, stream: Stream, since: float | None) -> None:
        await asyncio.sleep(self.settings.relay.grace_s)
        if self.streams.get(stream.name) is stream and stream.ingest is None and stream.holding_since == since:
            log.info("[%s] publisher not back within %.0f s: ending", stream.tag, self.settings.relay.grace_s)
            await self._remove_stream(stream)

    @staticmethod
    async def _stop_slate(stream: Stream) -> None:
        slate, stream.slate = stream.slate, None
        if slate is not None:
            await asyncio.get_running_loop().run_in_executor(None, slate.stop)

    async def end_publish(self, name: str, session_id: str) -> None:
        stream = self.streams.get(name)
        if stream is None or not _is_publisher(stream, session_id):
            raise NotFound(f"no publish session {session_id!r} on stream {name!r}")
        await self._remove_stream(stream)

    async def end_stream(self, name: str) -> None:
        """End a stream's publisher and all its viewers (the operator's call)."""
        await self._remove_stream(self.stream(name))

    async def _remove_stream(self, stream: Stream) -> None:
        if self.streams.get(stream.name) is not stream:
            return
        del self.streams[stream.name]
        for listener in self.stream_ended:
            listener(stream.name)
        self.worker.detach(stream.pipeline)
        viewers = list(stream.viewers.values())
        stream.viewers.clear()
        await self._stop_slate(stream)
        await stream.outputs.close()
        stream.audio.close()
        sessions = [s.close() for s in (stream.ingest, *viewers) if s is not None]
        await asyncio.gather(stream.output.close(), *sessions)
        log.info("[%s] stream ended (%d viewers closed)", stream.tag, len(viewers))

    # ---- watching (WHEP) ----------------------------------------------------------------------
    async def watch(self, name: str, offer: str) -> tuple[ViewerSession, str]:
        check_stream_name(name)
        stream = self.streams.get(name)
        if stream is None:
            raise StreamNotPublished(name)
        limit = self.settings.rtc.max_viewers_per_stream
        if len(stream.viewers) >= limit:
            raise AtCapacity(f"stream {name!r} has its maximum of {limit} viewers")
        sections = parse_media_sections(offer)
        require_video(sections, sending=False)
        wants_audio = any(s.kind == "audio" and s.direction in ("recvonly", "sendrecv") and s.port for s in sections)
        session = ViewerSession(name, self._rtc_config(), stream, wants_audio, **self._session_kw())
        try:
            answer = await session.negotiate(offer)
        except BaseException:
            await session.close()
            raise
        if self.streams.get(name) is not stream:  # the publisher left while we negotiated
            await session.close()
            raise StreamNotPublished(name)
        stream.viewers[session.id] = session
        log.info("[%s] watching", session.tag)
        return session, answer

    async def end_watch(self, name: str, session_id: str) -> None:
        stream = self.streams.get(name)
        session = stream.viewers.pop(session_id, None) if stream else None
        if session is None:
            raise NotFound(f"no viewer session {session_id!r} on stream {name!r}")
        await session.close()

    # ---- control ------------------------------------------------------------------------------
    async def control(
        self,
        name: str,
        preset: str | None = None,
        effects: list[EffectSpec] | None = None,
        params: dict[str, dict[str, Any]] | None = None,
    ) -> Stream:
        """Change a live stream's chain (see `hub.control`); the stream keeps its chain on any error."""
        stream = self.stream(name)
        spec = wanted_spec(stream, self.presets, preset, effects, params)
        await change_chain(stream, self.presets, spec, lambda: self.streams.get(name) is stream)
        return stream

    # ---- session ends -------------------------------------------------------------------------
    def _session_ended(self, session: PeerSession) -> None:
        self._spawn(self._end_session(session), f"end {session.tag}")

    async def _end_session(self, session: PeerSession) -> None:
        stream = self.streams.get(session.stream)
        if isinstance(session, IngestSession):
            if stream is not None and stream.ingest is session:
                if self.settings.relay.grace_s > 0 and not self.draining:
                    await session.close()
                    await self._hold(stream)
                else:
                    await self._remove_stream(stream)
        elif stream is not None and stream.viewers.get(session.id) is session:
            del stream.viewers[session.id]
            await session.close()
        else:
            await session.close()

    # ---- shutting down ------------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> bool:
        """Take no new publishers and wait up to `timeout_s` for the live streams to end; True
        when they all did. Streams held on their slate end at once (their publisher could not
        come back here), and so does a stream whose publisher drops from now on."""
        self.draining = True
        for listener in self.drain_started:
            listener()
        held = [s for s in self.streams.values() if s.ingest is None]
        await asyncio.gather(*(self._remove_stream(s) for s in held))
        self._cancel_grace_timers({s.name for s in held})
        if self.streams or self._negotiating:
            log.info("draining: waiting up to %.0f s for %d live streams to end", timeout_s, len(self.streams))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # polled: streams end through several paths (DELETE, peer failure, operator), and a
        # publish negotiating when the drain began may still add one
        while self.streams or self._negotiating:
            if loop.time() >= deadline:
                log.info("draining: %d streams still live after %.0f s; closing them", len(self.streams), timeout_s)
                return False
            await asyncio.sleep(min(0.1, deadline - loop.time()))
        return True

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_grace_timers(self, streams: set[str] | None = None) -> None:
        """The grace timers (see `_hold`) of `streams` (all when None): their streams ended, so
        they wait for nothing now."""
        for task in list(self._tasks):
            name = task.get_name()
            if name.startswith("grace ") and (streams is None or name[len("grace "):] in streams):
                task.cancel()

    async def close(self) -> None:
        """End every stream and wait for pending session ends."""
        await asyncio.gather(*(self._remove_stream(s) for s in list(self.streams.values())))
        self._cancel_grace_timers()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT_S)

    @property
    def tasks(self) -> int:
        return len(self._tasks)
