"""Peer sessions and the `SessionManager`, the sole owner of every stream and session.

An `IngestSession` is a publisher's recvonly peer (WHIP): its decoded video goes into the
stream's engine pipeline. A `ViewerSession` is a viewer's sendonly peer (WHEP) fed from the
stream's output. Each session owns the tasks it starts and cancels them on close; the manager
owns the tasks that end sessions. Nothing here touches pixels.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError

from livegen.config import EffectSpec, PresetSpec, Settings
from livegen.engine.pipeline import StreamPipeline
from livegen.engine.presets import PresetLibrary, with_params
from livegen.engine.worker import DeviceWorker
from livegen.errors import (
    AtCapacity,
    BadRequest,
    InvalidSdp,
    NotFound,
    StreamBusy,
    StreamNotPublished,
    Unprocessable,
)
from livegen.media.audio import AudioRelay
from livegen.media.output import StreamOutput
from livegen.rtc import jitter
from livegen.rtc.ice import advertise_addresses
from livegen.rtc.sdp import (
    codec_preferences,
    negotiated_codec,
    parse_media_sections,
    payload_types,
    require_video,
)
from livegen.rtc.tracks import EncodedVideoTrack, ProcessedVideoTrack, RelayedAudioTrack
from livegen.rtc.trickle import IceFragment, ice_credentials

log = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLOSE_TIMEOUT_S = 5.0


def check_stream_name(name: str) -> str:
    if not STREAM_NAME.fullmatch(name):
        raise BadRequest(f"invalid stream name {name!r}: use 1-64 of A-Z a-z 0-9 _ -")
    return name


class PeerSession:
    """One peer connection and the tasks working for it."""

    role = "peer"

    def __init__(
        self,
        stream: str,
        config: RTCConfiguration,
        on_end: Callable[[PeerSession], None],
        connect_timeout_s: float,
        advertised_addresses: Sequence[str] = (),
    ):
        self.id = secrets.token_urlsafe(12)
        self.etag = f'"{secrets.token_urlsafe(9)}"'
        self.stream = stream
        self.remote_ice: tuple[str | None, str | None] = (None, None)
        self._bundled = False
        self.pc = RTCPeerConnection(config)
        self.created_at = time.time()
        self.states: list[str] = [self.pc.connectionState]
        self._on_end = on_end
        self._connect_timeout_s = connect_timeout_s
        self._advertised = advertised_addresses
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.pc.on("connectionstatechange", self._on_connection_state)

    @property
    def tag(self) -> str:
        return f"{self.role} {self.stream}/{self.id[:6]}"

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.tag} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def negotiate(self, offer_sdp: str) -> str:
        """Apply the offer, answer it with every local candidate gathered; return the answer."""
        self.remote_ice = ice_credentials(offer_sdp)
        self._bundled = "a=group:BUNDLE" in offer_sdp
        self.prepare_offer()
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except OperationError as exc:
            raise Unprocessable(f"no codec in the offer that the node can use ({exc})") from None
        except Exception as exc:  # aiortc raises many kinds on hostile SDP; all are the client's
            raise InvalidSdp(f"offer rejected: {exc or type(exc).__name__}") from None
        try:
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:
            raise Unprocessable(f"cannot answer the offer: {exc or type(exc).__name__}") from None
        answer = advertise_addresses(self.pc.localDescription.sdp, self._advertised)
        self.answered(answer)
        self.spawn(self._connect_deadline(), "connect-deadline")
        return answer

    def prepare_offer(self) -> None:
        """Hook: set up transceivers before the offer is applied (codecs are chosen then)."""

    def answered(self, answer: str) -> None:
        """Hook: the answer is made; what was negotiated is known."""

    async def trickle(self, fragment: IceFragment) -> None:
        """Add the client's trickled candidates. ICE restarts (new credentials) are refused."""
        ufrag, pwd = self.remote_ice
        if (fragment.ufrag and fragment.ufrag != ufrag) or (fragment.pwd and fragment.pwd != pwd):
            raise Unprocessable(
                "ICE restart is not supported by this node: DELETE the session and start a new one"
            )
        for candidate in fragment.candidates:
            if self._bundled:  # one transport carries every bundled m-line
                candidate.sdpMid, candidate.sdpMLineIndex = None, 0
            try:
                await self.pc.addIceCandidate(candidate)
            except Exception as exc:
                raise BadRequest(f"candidate refused: {exc or type(exc).__name__}") from None

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(self._connect_timeout_s)
        if self.pc.connectionState != "connected":
            log.info("[%s] not connected after %.0f s, ending", self.tag, self._connect_timeout_s)
            self.end()

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self.states.append(state)
        log.info("[%s] connection %s", self.tag, state)
        if state in ("failed", "closed"):
            self.end()

    def end(self) -> None:
        """Ask the owner to remove this session (idempotent, safe from callbacks)."""
        if not self._closed:
            self._on_end(self)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
        await self.pc.close()

    @property
    def closed(self) -> bool:
        return self._closed


class IngestSession(PeerSession):
    """A publisher (WHIP): receives its media and feeds video into the stream's pipeline."""

    role = "whip"

    def __init__(
        self,
        stream: str,
        config: RTCConfiguration,
        pipeline: StreamPipeline,
        audio: AudioRelay,
        max_size: tuple[int, int] = (1920, 1080),
        **kw: Any,
    ):
        super().__init__(stream, config, **kw)
        self.pipeline = pipeline
        self.max_size = max_size
        self.refused: str | None = None
        self.audio = audio
        self.video_tracks = 0
        self.audio_tracks = 0
        self._opus_payload_types: set[int] = set()
        self.pc.on("track", self._on_track)

    async def negotiate(self, offer_sdp: str) -> str:
        self._opus_payload_types = payload_types(offer_sdp, "audio", "opus")
        return await super().negotiate(offer_sdp)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self.video_tracks == 0:
            self.video_tracks += 1
            receiver = self._receiver(track)
            buffer = jitter.install(receiver) if receiver is not None else None
            self.spawn(self._pump_video(track, buffer), "video-in")
            return
        if track.kind == "audio" and self.audio_tracks == 0:
            self.audio_tracks += 1
            self._relay_opus(track)
        # aiortc still decodes what it receives; reading it keeps its receive queue empty.
        self.spawn(self._drain(track), f"{track.kind}-drain")

    def _receiver(self, track: MediaStreamTrack):
        return next((t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None)

    def _relay_opus(self, track: MediaStreamTrack) -> None:
        """Hand every Opus RTP payload of this track's receiver to the relay as it arrives."""
        receiver = self._receiver(track)
        if receiver is None:
            return
        handle = receiver._handle_rtp_packet
        relay, opus = self.audio, self._opus_payload_types

        async def handle_and_relay(packet, arrival_time_ms: int) -> None:
            if packet.payload_type in opus and packet.payload:
                relay.push(packet.payload, packet.timestamp)
            await handle(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = handle_and_relay

    async def _pump_video(self, track: MediaStreamTrack, buffer: jitter.FrameOnMarkerJitterBuffer | None) -> None:
        try:
            while True:
                frame = await track.recv()
                if frame.width > self.max_size[0] or frame.height > self.max_size[1]:
                    self.refused = f"{frame.width}x{frame.height} is over the limit of {self.max_size[0]}x{self.max_size[1]}"
                    log.warning("[%s] publish refused: %s", self.tag, self.refused)
                    self.end()
                    return
                times = buffer.arrival(frame.pts) if buffer is not None and frame.pts is not None else None
                if times is not None:
                    # decode: from the frame's last packet to the decoded picture on this loop
                    self.pipeline.stats.stages({"decode": (time.perf_counter() - times[1]) * 1000.0}, set())
                self.pipeline.submit(frame, times[0] if times is not None else None)
        except MediaStreamError:
            log.info("[%s] video track ended", self.tag)
            self.end()

    @staticmethod
    async def _drain(track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            pass


class ViewerSession(PeerSession):
    """A viewer (WHEP): sends the stream's processed video, encoded once for all viewers
    (or by aiortc for this viewer alone in per_viewer mode)."""

    role = "whep"

    def __init__(
        self,
        stream: str,
        config: RTCConfiguration,
        output: StreamOutput,
        audio: AudioRelay | None,
        **kw: Any,
    ):
        super().__init__(stream, config, **kw)
        self.output = output
        self.track: EncodedVideoTrack | ProcessedVideoTrack = (
            EncodedVideoTrack(output) if output.mode == "encode_once" else ProcessedVideoTrack(output)
        )
        self.audio_track = RelayedAudioTrack(audio) if audio is not None else None
        self.codec: str | None = None

    def prepare_offer(self) -> None:
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        transceiver.setCodecPreferences(codec_preferences("video", list(self.output.settings.codecs)))
        self._sender = transceiver.sender
        if self.audio_track is not None:
            audio = self.pc.addTransceiver(self.audio_track, direction="sendonly")
            audio.setCodecPreferences(codec_preferences("audio", ["opus"]))

    def answered(self, answer: str) -> None:
        self.codec = negotiated_codec(answer, "video")
        if self.codec is None:
            raise Unprocessable("the offer's video section was rejected")
        self.track.bind(self.codec)
        if self.output.mode == "encode_once":
            # a PLI/FIR from this viewer asks the stream's encoder, not aiortc's (unused) one
            codec = self.codec
            self._sender._send_keyframe = lambda: self.output.request_keyframe(codec)

    async def close(self) -> None:
        self.track.stop()
        if self.audio_track is not None:
            self.audio_track.stop()
        await super().close()


@dataclass
class Stream:
    name: str
    preset: str
    spec: PresetSpec
    pipeline: StreamPipeline
    output: StreamOutput
    audio: AudioRelay
    ingest: IngestSession
    viewers: dict[str, ViewerSession] = field(default_factory=dict)
    video_delay_s: Callable[[], float] = lambda: 0.0
    started_at: float = field(default_factory=time.time)

    def info(self) -> dict[str, Any]:
        return {
            "stream": self.name,
            "preset": self.preset,
            "effects": [effect.model_dump() for effect in self.spec.effects],
            "started_at": self.started_at,
            "viewers": len(self.viewers),
            "viewer_sessions": [
                {"id": v.id, "codec": v.codec, "since": v.created_at} for v in self.viewers.values()
            ],
            "viewer_codecs": sorted({v.codec for v in self.viewers.values() if v.codec}),
            **self.pipeline.stats.snapshot(),
            "output": self.output.stats(),
            "audio": {
                "packets_in": self.audio.packets_in,
                "packets_out": self.audio.packets_out,
                "sync_delay_ms": round(self.video_delay_s() * 1000, 1),
            },
        }


def video_delay_estimate(pipeline: StreamPipeline, output: StreamOutput, every_s: float = 0.5):
    """How long video currently spends in the node (processing + encoding), refreshed every
    `every_s`: what audio is held back by to stay in sync."""
    cached = [0.0, -1e9]  # value in seconds, when computed

    def delay_s() -> float:
        now = time.monotonic()
        if now - cached[1] >= every_s:
            node = pipeline.stats.node_ms.summary()["p50"] or 0.0
            encode = output.encoder.encode_ms.summary()["p50"] or 0.0
            cached[:] = [(node + encode) / 1000.0, now]
        return cached[0]

    return delay_s


class SessionManager:
    """Owns the stream map; every change to it goes through here, on the asyncio loop."""

    def __init__(self, settings: Settings, worker: DeviceWorker, presets: PresetLibrary):
        self.settings = settings
        self.worker = worker
        self.presets = presets
        self.streams: dict[str, Stream] = {}
        self._negotiating: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- capacity -----------------------------------------------------------------------
    @property
    def at_capacity(self) -> bool:
        return len(self.streams) + len(self._negotiating) >= self.settings.rtc.max_streams

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

    # ---- publishing (WHIP) ----------------------------------------------------------------
    async def publish(self, name: str, offer: str, preset: str | None = None) -> tuple[IngestSession, str]:
        check_stream_name(name)
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
            video_delay_s = video_delay_estimate(pipeline, output)
            audio = AudioRelay(loop, video_delay_s if self.settings.output.audio_sync else (lambda: 0.0))
            session = IngestSession(
                name, self._rtc_config(), pipeline, audio, max_size=(rtc.max_width, rtc.max_height), **self._session_kw()
            )
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
        self.streams[name] = Stream(name, spec.name, spec, pipeline, output, audio, session, video_delay_s=video_delay_s)
        self.worker.attach(pipeline)
        log.info("[%s] publishing with preset %s", session.tag, chain.preset)
        return session, answer

    async def end_publish(self, name: str, session_id: str) -> None:
        stream = self.streams.get(name)
        if stream is None or stream.ingest.id != session_id:
            raise NotFound(f"no publish session {session_id!r} on stream {name!r}")
        await self._remove_stream(stream)

    async def _remove_stream(self, stream: Stream) -> None:
        if self.streams.get(stream.name) is not stream:
            return
        del self.streams[stream.name]
        self.worker.detach(stream.pipeline)
        viewers = list(stream.viewers.values())
        stream.viewers.clear()
        stream.audio.close()
        await asyncio.gather(stream.output.close(), stream.ingest.close(), *(v.close() for v in viewers))
        log.info("[%s] stream ended (%d viewers closed)", stream.ingest.tag, len(viewers))

    # ---- watching (WHEP) ------------------------------------------------------------------
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
        audio = stream.audio if wants_audio else None
        session = ViewerSession(name, self._rtc_config(), stream.output, audio, **self._session_kw())
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

    def session(self, role: str, name: str, session_id: str) -> PeerSession:
        """The live WHIP ("whip") or WHEP ("whep") session with this id on stream `name`."""
        stream = self.streams.get(name)
        found: PeerSession | None = None
        if stream is not None:
            if role == "whip":
                found = stream.ingest if stream.ingest.id == session_id else None
            else:
                found = stream.viewers.get(session_id)
        if found is None:
            raise NotFound(f"no {role.upper()} session {session_id!r} on stream {name!r}")
        return found

    # ---- control --------------------------------------------------------------------------
    def stream(self, name: str) -> Stream:
        stream = self.streams.get(check_stream_name(name))
        if stream is None:
            raise NotFound(f"no stream {name!r}")
        return stream

    async def control(
        self,
        name: str,
        preset: str | None = None,
        effects: list[EffectSpec] | None = None,
        params: dict[str, dict[str, Any]] | None = None,
    ) -> Stream:
        """Change a live stream's chain: switch to `preset`, or run `effects`, then merge
        `params` into it. The new chain is built and checked off the loop, then swapped in
        between two frames; on any error the stream keeps its chain untouched."""
        stream = self.stream(name)
        if preset is not None and effects is not None:
            raise Unprocessable("give either preset or effects, not both")
        spec = stream.spec
        if preset is not None:
            spec = self.presets.spec(preset)
        elif effects is not None:
            spec = PresetSpec(name="custom", description="set through the API", effects=effects)
        if params:
            spec = with_params(spec, params)
        if self._retune(stream, spec):
            return stream
        chain = await asyncio.get_running_loop().run_in_executor(None, self.presets.build, spec)
        if self.streams.get(name) is not stream:  # the publisher left meanwhile
            chain.close()
            raise NotFound(f"no stream {name!r}")
        stream.pipeline.set_chain(chain)
        stream.spec, stream.preset = spec, spec.name
        log.info("[%s] chain → %s (%s)", stream.ingest.tag, spec.name, ", ".join(e.name for e in spec.effects))
        return stream

    def _retune(self, stream: Stream, spec: PresetSpec) -> bool:
        """Change `stream`'s running chain in place when `spec` has the same effects and each
        changed one can take its new parameters live (no rebuild, no lost state); False when
        the chain must be rebuilt. Parameters are validated first: a bad one is 422."""
        chain = stream.pipeline.chain
        if chain is None or [e.name for e in spec.effects] != [e.name for e in chain.effects]:
            return False
        changes = {}
        for index, (effect, wanted) in enumerate(zip(chain.effects, spec.effects, strict=True)):
            params = type(effect).validate(wanted.params)
            if params == effect.params:
                continue
            if not effect.retunable(params):
                return False
            changes[index] = params
        stream.pipeline.retune(chain, changes)
        stream.spec, stream.preset = spec, spec.name
        log.info("[%s] retuned %s in place", stream.ingest.tag, ", ".join(chain.effects[i].name for i in changes) or "nothing")
        return True

    # ---- session ends ---------------------------------------------------------------------
    def _session_ended(self, session: PeerSession) -> None:
        self._spawn(self._end_session(session), f"end {session.tag}")

    async def _end_session(self, session: PeerSession) -> None:
        stream = self.streams.get(session.stream)
        if isinstance(session, IngestSession):
            if stream is not None and stream.ingest is session:
                await self._remove_stream(stream)
        elif stream is not None and stream.viewers.get(session.id) is session:
            del stream.viewers[session.id]
            await session.close()
        else:
            await session.close()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """End every stream and wait for pending session ends."""
        await asyncio.gather(*(self._remove_stream(s) for s in list(self.streams.values())))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT_S)

    @property
    def tasks(self) -> int:
        return len(self._tasks)
