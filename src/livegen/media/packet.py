"""`MediaPacket`: one encoded packet on its way to an output or a recording, with the node time
it was handed on (what audio and video are aligned on)."""

from __future__ import annotations

from dataclasses import dataclass

import av


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One encoded packet for an output: `kind` "video" (H.264, Annex B, pts in 1/90000) or
    "audio" (AAC-LC 48 kHz with pts in 1/48000, or Opus); `at` is the node's monotonic time
    when it was handed on, the common clock audio and video are aligned on."""

    kind: str
    packet: av.Packet
    at: float
