"""What a frame's notes mean for a bench result, so no row shows a degraded run as a clean one.

The engine notes on each frame what an effect fell back on or degraded (the stream stats count
them by note, under `degraded`). For a result they fall in three kinds:
- *fallback*: the effect did not do its job on the frame and showed its fallback instead (the
  `generated` background its `fallback` mode, `stylize` the camera picture): no diffusion model
  or device, or no picture yet;
- *degraded*: the effect shed work to keep up (a reused mask or diffusion output, a lower
  resolution); every note not named here counts as this, so a new one is never taken for clean;
- *similar*: diffusion skipped because the input barely changed (`similarity`), by design.
A frame counts once, under the first of these kinds among its notes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

KINDS = ("fallback", "degraded", "similar")
FALLBACK_NOTES = frozenset({"background_fallback", "diffusion_unavailable", "diffusion_prompt_pending"})
SIMILAR_NOTES = frozenset({"diffusion_similar"})
ALL = 0.995
"""A share at least this large reads as "all frames"."""


def note_kind(note: str) -> str:
    if note in FALLBACK_NOTES:
        return "fallback"
    if note in SIMILAR_NOTES:
        return "similar"
    return "degraded"


def frame_kind(notes: Iterable[str]) -> str | None:
    """The kind one frame counts under (see the module docstring); None for a clean frame."""
    kinds = {note_kind(note) for note in notes}
    return next((kind for kind in KINDS if kind in kinds), None)


def shares_from_counts(notes: dict[str, int], frames: int) -> dict[str, float]:
    """Share of `frames` per kind from per-note counts alone (the node's stats, older results):
    the most frequent note of each kind, exact when one note marks each kind's frames and a
    lower bound otherwise."""
    shares: dict[str, float] = {}
    if frames <= 0:
        return shares
    for note, count in notes.items():
        kind = note_kind(note)
        shares[kind] = max(shares.get(kind, 0.0), min(1.0, count / frames))
    return {kind: round(share, 4) for kind, share in shares.items() if share > 0}


def percent(share: float) -> str:
    value = 100 * share
    return "<1 %" if 0 < value < 1 else f"{value:.0f} %"


def frames_text(
    shares: dict[str, float],
    notes: dict[str, int],
    *,
    shows: str | None = None,
    cause: str | None = None,
    over_budget: float = 0.0,
) -> str | None:
    """What happened to the frames, in words, or None when every one was fully processed:
    e.g. "all frames blur fallback (no CUDA device)", "degraded 12 % (mask_reused)",
    "over budget 3 %". `shows` is what a fallen-back frame showed, `cause` why it fell back
    (else the fallback notes are named); `over_budget` the share of frames over the engine's
    per-frame budget."""
    def named(kind: str) -> str:
        return ", ".join(sorted(note for note, count in notes.items() if count and note_kind(note) == kind))

    parts = []
    fallback = shares.get("fallback", 0.0)
    if fallback > 0:
        if fallback >= ALL:
            text = f"all frames {shows} fallback" if shows else "all frames fell back"
        else:
            text = f"{shows + ' fallback' if shows else 'fell back'} {percent(fallback)}"
        why = cause or named("fallback")
        parts.append(f"{text} ({why})" if why else text)
    if shares.get("degraded", 0.0) > 0:
        parts.append(f"degraded {percent(shares['degraded'])} ({named('degraded')})")
    if over_budget > 0:
        parts.append(f"over budget {percent(over_budget)}")
    if shares.get("similar", 0.0) > 0:
        parts.append(f"diffusion reused on similar input {percent(shares['similar'])}")
    return ", ".join(parts) or None


def clean(shares: dict[str, Any]) -> bool:
    """No frame fell back or was degraded (frames reused as similar are fine)."""
    return not shares.get("fallback") and not shares.get("degraded")
