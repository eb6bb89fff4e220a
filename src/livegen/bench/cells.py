"""How a number reads in a table, in the results README and on the terminal: a dash where a
value is missing, fixed decimals per kind of number, markdown rows and aligned text columns.

Every scenario's tables use these, so a missing value or a ratio looks the same everywhere.
"""

from __future__ import annotations

from typing import Any

MISSING = "–"


def fixed(value: float | None, decimals: int = 0) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


def fps(value: float | None) -> str:
    """Frames per second (and other rates): one decimal."""
    return fixed(value, 1)


def signed(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.0f}"


def ratio(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}×"


def plain(value: float | None) -> str:
    """The shortest form (`%g`): counts, percentages and seconds as they were recorded."""
    return MISSING if value is None else f"{value:g}"


def pair(a: float | None, b: float | None, fmt=fixed) -> str:
    return f"{fmt(a)} / {fmt(b)}"


def cell(value: Any) -> str:
    """A terminal table cell: floats with one decimal, anything else as it prints."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + row[0].ljust(widths[0])
        + "".join("  " + text.rjust(w) for text, w in zip(row[1:], widths[1:], strict=True))
        for row in rows
    ]


def markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def file_link(name: str) -> str:
    """A link to a result file from the README beside it."""
    return f"[{name}]({name})"


def run_date(result: dict[str, Any]) -> str:
    """When a result was measured, to the minute (UTC)."""
    return result["date_utc"][:16].replace("T", " ")
