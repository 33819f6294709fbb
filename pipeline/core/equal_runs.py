"""Runs of equal consecutive values, e.g. the rows of each image in a table sorted by image."""

from __future__ import annotations

import numpy as np


def equal_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Return ``[(start, end), ...]``: the half-open row ranges over which `values` stays equal,
    in order (one range per image when rows are sorted by image id)."""
    values = np.asarray(values)
    if len(values) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))
