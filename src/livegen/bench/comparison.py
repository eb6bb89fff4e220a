"""How a new bench result differs from an earlier one (`--compare OLD.json`): old, new and the
change of every figure compared, as a terminal table.

Any two results of one scenario compare by their latencies, rates and CPU shares, found by
name wherever they sit in the document; a scenario may pick its own figures instead (e2e does).
"""

from __future__ import annotations

import re
from typing import Any

from livegen.bench.cells import MISSING, aligned

COMPARED_LEAF = re.compile(r"(^|_)(p50|p95|p99|mean|fps|pct)(_|$)|fps")


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a result that is a latency, a rate or a CPU share, by its path."""
    found: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("machine", "options", "node_stats"):
                continue
            found.update(_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            label = value.get("mode", "") + "/" + str(value.get("size", "")) if isinstance(value, dict) else ""
            found.update(_numbers(value, f"{prefix}[{index}{' ' + label if label.strip('/') else ''}]"))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        leaf = prefix.rsplit(".", 1)[-1]
        if COMPARED_LEAF.search(leaf):
            found[prefix] = float(data)
    return found


def change_row(label: str, old: Any, new: Any, decimals: int = 1) -> tuple[str, str, str, str]:
    """One row of a comparison: the old and new value and the change, absolute and relative."""

    def show(value: Any) -> str:
        return MISSING if value is None else f"{value:.{decimals}f}"

    change = ""
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        change = f"{new - old:+.{decimals}f}" + (f" ({(new - old) / old:+.0%})" if old else "")
    return label, show(old), show(new), change


def _compared_with(old: dict[str, Any]) -> str:
    return f"compared with the run of {old.get('date_utc', '?')} ({old.get('command', '?')}):"


def comparison(old: dict[str, Any], new: dict[str, Any], rows: list[tuple[str, str, str, str]]) -> str:
    """A comparison's text: which run `new` is compared with, whether like for like, `rows`."""
    lines = [_compared_with(old)]
    if old.get("options") != new.get("options"):
        lines.append("  note: the options differ, so the numbers are not like for like")
    return "\n".join(lines + aligned([("", "old", "new", "change"), *rows]))


def compare_results(old: dict[str, Any], new: dict[str, Any], limit: int = 60) -> str:
    """How `new` differs from `old` (any scenario): every latency, rate and CPU figure both have."""
    if old.get("scenario") != new.get("scenario"):
        return f"{_compared_with(old)}\n  not comparable: {old.get('scenario')} vs {new.get('scenario')}"
    a, b = _numbers(old), _numbers(new)
    rows = [change_row(key, a[key], b[key]) for key in [k for k in b if k in a][:limit]]
    if not rows:
        return f"{_compared_with(old)}\n  nothing in common to compare"
    return comparison(old, new, rows)
