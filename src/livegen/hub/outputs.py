"""`StreamOutputs`: a stream's pushed outputs and recordings, wired to its media.

Every output gets the stream's video as it was encoded once (a tap on the stream's encoder, on
the encoder's thread) and its audio either as the publisher's Opus (WHIP) or as AAC, which is
encoded once per stream by an `AacEncoder` started with the first output that wants it. An
output only ever queues what it is offered (`relay.base.PacketQueue`), so a slow one drops
its own backlog and never slows the stream, its viewers or the other outputs. While any output
runs, the stream's encoder makes a keyframe at least every `relay.max_keyframe_interval_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import av
from aiortc import RTCIceServer

from livegen.config import Settings
from livegen.errors import AtCapacity, NotFound, Unprocessable
from livegen.media.aac import AacEncoder
from livegen.media.audio import AudioRelay
from livegen.media.output import TAP_CODEC, StreamOutput
from livegen.media.packet import MediaPacket
from livegen.relay.base import Output, PermanentOutputError, redact_url
from livegen.relay.recording import RecordingOutput
from livegen.relay.rtmp import RtmpOutput
from livegen.relay.upload import RecordingUploader
from livegen.relay.whip_push import WhipPushOutput

log = logging.getLogger(__name__)


SRT_MISSING = (
    "srt:// outputs need FFmpeg built with libsrt, and this node's PyAV has none; "
    "push with rtmp://, rtmps:// or to a WHIP URL instead"
)


def _unusable_url(message: str) -> Unprocessable:
    return Unprocessable(message, errors=[{"field": "url", "message": message}])


class StreamOutputs:
    def __init__(
        self, stream: str, output: StreamOutput, audio: AudioRelay, settings: Settings,
        uploader: RecordingUploader | None = None,
    ):
        self.stream = stream
        self._uploader = uploader
        self._output = output
        self._audio = audio
        self._settings = settings
        self._relay = settings.relay
        self._all: dict[str, Output] = {}
        self._fanout: tuple[Output, ...] = ()
        """What the producers' threads read: replaced whole, never changed in place."""
        self._tap: int | None = None
        self._listener: int | None = None
        self._aac: AacEncoder | None = None

    # ---- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._all)

    def get(self, output_id: str) -> Output:
        output = self._all.get(output_id)
        if output is None:
            raise NotFound(f"no output {output_id!r} on stream {self.stream!r}")
        return output

    def statuses(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [_describe(o) for o in self.of_kind(kind)]

    def of_kind(self, kind: str | None = None) -> list[Output]:
        """The outputs of one kind ("rtmp", "whip", "recording"), or all of them."""
        return [o for o in self._all.values() if kind is None or o.status.kind == kind]

    def request_keyframe(self) -> None:
        """Thread-safe: what each output calls on (re)connecting."""
        self._output.request_keyframe(TAP_CODEC)

    # ---- changes (on the loop) ------------------------------------------------------------------
    def open(self, url: str, name: str | None = None, token: str | None = None) -> Output:
        """An output for `url` (rtmp://, rtmps://, or the http(s):// URL of a WHIP endpoint with
        its bearer `token`), started; 422 naming what is wrong with the URL."""
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError as exc:  # e.g. "Invalid IPv6 URL": a [ without its ]
            raise _unusable_url(f"not a URL: {exc}") from None
        try:
            if scheme in ("rtmp", "rtmps"):
                output: Output = RtmpOutput(
                    self.stream, url, self._aac_encoder().template, self.request_keyframe, self._relay, name=name
                )
            elif scheme in ("http", "https"):
                ice = [
                    RTCIceServer(urls=s.url, username=s.username, credential=s.credential)
                    for s in self._settings.rtc.ice_servers
                ]
                output = WhipPushOutput(
                    self.stream, url, token, self._relay, self.request_keyframe, asyncio.get_running_loop(),
                    ice_servers=ice, name=name,
                )
            elif scheme == "srt":
                raise _unusable_url(SRT_MISSING)
            else:
                raise _unusable_url(f"{redact_url(url)!r}: outputs are rtmp://, rtmps:// or a WHIP http(s):// URL")
        except (ValueError, PermanentOutputError) as exc:
            self._rewire()  # an AAC encoder started for it is not needed after all
            raise _unusable_url(str(exc)) from None
        return self.add(output)

    def record(self) -> Output:
        """A recording of this stream (fragmented MP4 under `recording.dir`), started; its
        files are handed to the uploader when object storage is configured."""
        uploader = self._uploader
        recording = RecordingOutput(
            self.stream, self._settings.recording, self._aac_encoder().template, self.request_keyframe,
            on_file_opened=uploader.on_file_opened if uploader is not None else None,
            on_file_closed=uploader.on_file_closed if uploader is not None else None,
            keep=uploader.pending if uploader is not None else None,
            queue_packets=self._relay.queue_packets,
        )
        return self.add(recording)

    def _aac_encoder(self) -> AacEncoder:
        """The stream's AAC encoder (started on first use): outputs are built on its stream."""
        if self._aac is None:
            self._aac = AacEncoder(self.stream, self._offer_aac)
            self._aac.start()
        return self._aac

    def add(self, output: Output) -> Output:
        """Start `output` and feed it; 503 when the stream already has its maximum."""
        limit = self._relay.max_outputs_per_stream
        if len(self._all) >= limit:
            raise AtCapacity(f"stream {self.stream!r} has its maximum of {limit} outputs and recordings")
        self._all[output.status.id] = output
        self._rewire()
        output.start()
        log.info("[%s] output %s %s added", self.stream, output.status.kind, output.status.url)
        return output

    async def remove(self, output_id: str, kind: str | None = None) -> dict[str, Any]:
        """Stop one output and forget it; its last status. `kind` "recording" or "output" (any
        other kind) must match, or it is not found."""
        output = self.get(output_id)
        if kind is not None and (output.status.kind == "recording") != (kind == "recording"):
            raise NotFound(f"no {kind} {output_id!r} on stream {self.stream!r}")
        del self._all[output_id]
        self._rewire()
        await _stop(output)
        log.info("[%s] output %s %s removed", self.stream, output.status.kind, output.status.url)
        return _describe(output)

    async def close(self) -> None:
        outputs = list(self._all.values())
        self._all.clear()
        self._rewire()
        await asyncio.gather(*(_stop(o) for o in outputs))

    def _rewire(self) -> None:
        """Attach the taps the current outputs need and detach the rest."""
        outputs = tuple(self._all.values())
        self._fanout = outputs
        wants = set().union(*(o.wants for o in outputs)) if outputs else set()
        if "video" in wants and self._tap is None:
            self._tap = self._output.add_tap(self._video, self._relay.max_keyframe_interval_s)
        elif "video" not in wants and self._tap is not None:
            self._output.remove_tap(self._tap)
            self._tap = None
        if "aac" not in wants and self._aac is not None:
            aac, self._aac = self._aac, None
            asyncio.get_running_loop().run_in_executor(None, aac.stop)  # joins its thread: not on the loop
        audio = wants & {"aac", "opus"}
        if audio and self._listener is None:
            self._listener = self._audio.add_listener(self._opus)
        elif not audio and self._listener is not None:
            self._audio.remove_listener(self._listener)
            self._listener = None

    # ---- media (producers' threads) -------------------------------------------------------------
    def _video(self, packets: list[av.Packet]) -> None:
        now = time.monotonic()
        for output in self._fanout:
            if "video" in output.wants:
                for packet in packets:
                    output.offer(MediaPacket("video", packet, now))

    def _opus(self, packet: av.Packet) -> None:
        aac = self._aac
        if aac is not None:
            aac.push_opus(bytes(packet))
        now = time.monotonic()
        for output in self._fanout:
            if "opus" in output.wants:
                output.offer(MediaPacket("audio", packet, now))

    def _offer_aac(self, item: MediaPacket) -> None:
        for output in self._fanout:
            if "aac" in output.wants:
                output.offer(item)


async def _stop(output: Output) -> None:
    close = getattr(output, "close", None)
    if close is not None:  # outputs living on the loop (WHIP push) end there
        await close()
    else:
        await asyncio.get_running_loop().run_in_executor(None, output.stop)


def _describe(output: Output) -> dict[str, Any]:
    """An output's status; a recording's also says what it wrote (files, duration)."""
    return output.as_json() if isinstance(output, RecordingOutput) else output.status.as_json()
