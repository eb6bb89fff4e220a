"""`Stream`: one live stream and everything it owns.

A stream owns its engine pipeline (frames in, effect chain), its output (encode once, fan out to
viewers), its audio relay, its publisher's session and its viewers' sessions. Its publisher's
session feeds the pipeline and the audio relay (as `VideoSink` and `AudioSink`); its viewers'
sessions read the stream as their `ViewerFeed`: `rtc` reaches the engine and the encoder only
through these narrow faces. `snapshot()` is the one read-only view of a stream that the API,
`/ops` and the metrics use.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import av

from livegen.config import PresetSpec
from livegen.engine.pipeline import StreamPipeline
from livegen.flow.mailbox import Mailbox
from livegen.hub.outputs import StreamOutputs
from livegen.media.audio import AudioRelay
from livegen.media.encoder import ViewerEncoder
from livegen.media.output import StreamOutput
from livegen.media.slate import SlateSource
from livegen.observability.metrics import StreamReading
from livegen.rtc.ingest import IngestSession
from livegen.rtc.viewer import ViewerSession


def public_id(session_id: str) -> str:
    """The id a viewer's session is shown by in the API and on /ops. The session id itself is the
    secret in the session's URL (whoever knows it may end or trickle into the session), so what
    is shown is a one-way digest of it."""
    return hashlib.sha256(f"viewer:{session_id}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StreamSnapshot:
    """A stream read at one moment: `info` is what the API and `/ops` answer, `reading` what
    the metrics collector exports."""

    info: dict[str, Any]
    reading: StreamReading


class VideoDelay:
    """How long video currently spends in the node (processing + encoding), refreshed every
    `every_s`: what audio is held back by to stay in sync."""

    def __init__(self, pipeline: StreamPipeline, output: StreamOutput, every_s: float = 0.5):
        self._pipeline, self._output, self._every_s = pipeline, output, every_s
        self._value_s, self._computed = 0.0, -1e9

    def __call__(self) -> float:
        now = time.monotonic()
        if now - self._computed >= self._every_s:
            node = self._pipeline.stats.node_ms.summary()["p50"] or 0.0
            encode = self._output.encoder.encode_ms.summary()["p50"] or 0.0
            self._value_s, self._computed = (node + encode) / 1000.0, now
        return self._value_s


@dataclass(eq=False)
class Stream:
    name: str
    spec: PresetSpec
    pipeline: StreamPipeline
    output: StreamOutput
    audio: AudioRelay
    video_delay_s: VideoDelay
    outputs: StreamOutputs
    ingest: IngestSession | None = None
    """The publisher's session; None while the stream holds on its slate."""
    viewers: dict[str, ViewerSession] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    slate: SlateSource | None = None
    holding_since: float | None = None
    """When the publisher dropped (time.time()), while the stream holds on its slate."""

    @property
    def preset(self) -> str:
        return self.spec.name

    @property
    def tag(self) -> str:
        return self.ingest.tag if self.ingest is not None else f"stream {self.name}"

    # ---- ViewerFeed: the viewers' sessions read these ------------------------------------------
    @property
    def output_mode(self) -> str:
        return self.output.mode

    @property
    def video_codecs(self) -> tuple[str, ...]:
        return tuple(self.output.settings.codecs)

    def subscribe_packets(self, codec: str) -> Mailbox[av.Packet]:
        return self.output.subscribe_packets(codec)

    def subscribe_frames(self) -> Mailbox[av.VideoFrame]:
        return self.output.subscribe_frames()

    def frame_encoder(self, codec: str) -> ViewerEncoder:
        return self.output.viewer_encoder(codec)

    def subscribe_audio(self) -> Mailbox[av.Packet]:
        return self.audio.subscribe()

    def unsubscribe(self, mailbox: Mailbox[Any]) -> None:
        self.audio.unsubscribe(mailbox)
        self.output.unsubscribe(mailbox)

    def request_keyframe(self, codec: str) -> None:
        self.output.request_keyframe(codec)

    # ---- reading ----------------------------------------------------------------------------
    def snapshot(self) -> StreamSnapshot:
        stats, encoder = self.pipeline.stats, self.output.encoder
        figures = stats.snapshot()
        viewers = list(self.viewers.values())
        outputs = self.outputs.statuses()
        info = {
            "stream": self.name,
            "state": "holding" if self.ingest is None else "live",
            "holding_since": self.holding_since,
            "preset": self.preset,
            "effects": [effect.model_dump() for effect in self.spec.effects],
            "started_at": self.started_at,
            "viewers": len(viewers),
            "viewer_sessions": [{"id": public_id(v.id), "codec": v.codec, "since": v.created_at} for v in viewers],
            "viewer_codecs": sorted({v.codec for v in viewers if v.codec}),
            **figures,
            "load": self.pipeline.load.as_json(),
            "output": self.output.stats(),
            "audio": {
                "packets_in": self.audio.packets_in,
                "packets_out": self.audio.packets_out,
                "sync_delay_ms": round(self.video_delay_s() * 1000, 1),
            },
            "outputs": [o for o in outputs if o["kind"] != "recording"],
            "recordings": [o for o in outputs if o["kind"] == "recording"],
        }
        dropped = dict(figures["dropped"])
        if encoder.frames_dropped:
            # replaced in the encoder's slot: processed, but never sent to any viewer
            dropped["encoder_slot_replaced"] = encoder.frames_dropped
        stages = stats.stage_counts()
        if encoder.frames_encoded:
            stages["encode"] = encoder.encode_histogram.read()
        reading = StreamReading(
            stream=self.name,
            fps_in=figures["fps_in"],
            fps_out=figures["fps_out"],
            frames_in=figures["frames_in"],
            frames_out=figures["frames_out"],
            over_budget=figures["over_budget"],
            dropped=dropped,
            degradations=figures["degraded"],
            viewers=len(viewers),
            slots={"engine": int(bool(self.pipeline.slot)), "encoder": int(bool(encoder.slot))},
            processing=stats.processing_histogram.read(),
            node_latency=stats.node_histogram.read(),
            stages=stages,
            output={codec: (sent.total, sent.bits_per_second()) for codec, sent in list(encoder.bytes_out.items())},
            outputs=outputs,
            errors=figures["errors"],
            shed_level=self.pipeline.load.level,
        )
        return StreamSnapshot(info, reading)

    def info(self) -> dict[str, Any]:
        """The stream as the API shows it."""
        return self.snapshot().info
