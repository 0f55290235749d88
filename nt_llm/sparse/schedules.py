"""Interpolation schedules for prune rate, density and temperature over the DST window."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def decay_factor(kind: str, progress: float) -> float:
    """Weight of the start value at `progress` in [0, 1]: 1 at the start, 0 at the end (constant: always 1)."""
    p = min(max(progress, 0.0), 1.0)
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return 1.0 - p
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")


def interpolate(kind: str, start: float, end: float, progress: float) -> float:
    """Value moving from `start` (progress 0) to `end` (progress 1) along the schedule's shape."""
    return end + (start - end) * decay_factor(kind, progress)
