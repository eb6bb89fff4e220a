"""Summary statistics of measured samples (latencies, stage times, rates per viewer): the one
place where a list of numbers becomes the percentiles and extremes a result records.

Each scenario records its own selection at its own precision, so both are parameters. An empty
sample gives None for every statistic: nothing was measured, which is not the same as 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def describe(samples: Sequence[float] | np.ndarray, stats: Sequence[str], decimals: int) -> dict[str, float | None]:
    """`stats` of `samples` by name, rounded: `pNN` (a percentile), `median`, `mean`, `min`,
    `max` or `stdev` (of the population)."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        return dict.fromkeys(stats)
    return {name: round(float(_statistic(values, name)), decimals) for name in stats}


def _statistic(values: np.ndarray, name: str) -> float:
    if name.startswith("p") and name[1:].isdigit():
        return float(np.percentile(values, int(name[1:])))
    if name == "median":
        return float(np.median(values))
    if name in ("mean", "min", "max"):
        return float(getattr(values, name)())
    if name == "stdev":
        return float(values.std())
    raise ValueError(f"unknown statistic {name!r}")
