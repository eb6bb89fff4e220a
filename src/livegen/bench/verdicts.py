"""Goals a result is held to: each goal's verdict is recorded in the result with the figures it
was decided on, never asserted (a missed goal is a finding, the run still succeeded), and reads
the same in every scenario's tables.

`met` is None when the run could not decide it (a figure is missing, too few rows).
"""

from __future__ import annotations

from typing import Any

from livegen.bench.cells import MISSING


def verdict(goal: str, met: bool | None, **figures: Any) -> dict[str, Any]:
    return {"goal": goal, "met": met, **figures}


def at_most(value: float | None, limit: float | None) -> bool | None:
    """value ≤ limit, or None when either is missing."""
    return None if value is None or limit is None else value <= limit


def at_least(value: float | None, limit: float | None) -> bool | None:
    return None if value is None or limit is None else value >= limit


def ratio(value: float | None, reference: float | None, decimals: int = 3) -> float | None:
    return round(value / reference, decimals) if value is not None and reference else None


def met_text(met: bool | None) -> str:
    return MISSING if met is None else ("yes" if met else "NO")


def verdicts_text(verdicts: list[dict[str, Any]]) -> str:
    """`goal: yes; goal: NO` for a table cell."""
    return "; ".join(f"{v['goal']}: {met_text(v.get('met'))}" for v in verdicts) or MISSING


def all_met(verdicts: list[dict[str, Any]]) -> bool | None:
    """True when every goal was met, False when one was missed, None when one is undecided."""
    states = [v.get("met") for v in verdicts]
    if False in states:
        return False
    return None if None in states or not states else True
