"""Which encoder a measured path ran, and whether two paths ran the same one.

The e2e baseline and the node's viewer, and fanout's encode_once and per_viewer modes, are
compared like for like only when their video encoders ran the same settings: a comparison
against aiortc's defaults (libx264's `medium` preset, a bitrate that follows REMB) measures the
encoder, not what the node adds or what encoding once saves. Results record each path's
`VideoEncoder.describe()`; reports name it and say when two differed.
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import MISSING

COMPARED = ("encoder", "profile", "preset", "tune", "bitrate_bps", "maxrate", "bufsize", "gop_frames")
"""The settings that must match for two paths to be like for like."""


def same_encoder(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool | None:
    """Whether `a` and `b` ran the same `COMPARED` settings; None when either is unknown."""
    if not a or not b:
        return None
    return all(a.get(key) == b.get(key) for key in COMPARED)


def encoder_text(encoder: dict[str, Any] | None) -> str:
    """e.g. "libx264 ultrafast/zerolatency Baseline 2500 kbit/s"; a dash when not recorded."""
    if not encoder:
        return MISSING
    tuning = "/".join(str(encoder[key]) for key in ("preset", "tune") if encoder.get(key))
    bitrate = encoder.get("bitrate_bps")
    words = [encoder.get("encoder"), tuning, encoder.get("profile"), bitrate and f"{bitrate / 1000:.0f} kbit/s"]
    return " ".join(str(word) for word in words if word)
