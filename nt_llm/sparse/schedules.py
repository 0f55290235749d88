"""Interpolation schedules for prune rate, density and temperature over the DST window.

A schedule is a function of progress in [0, 1] giving the weight of the start value: 1 at the
start, 0 at the end. Register a new one with `@SCHEDULES.register("name")`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from nt_llm.sparse.registry import Registry

Schedule = Callable[[float], float]
SCHEDULES: Registry[Schedule] = Registry("schedule")


@SCHEDULES.register("constant")
def constant(progress: float) -> float:
    del progress
    return 1.0


@SCHEDULES.register("linear")
def linear(progress: float) -> float:
    return 1.0 - progress


@SCHEDULES.register("cosine")
def cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def decay_factor(kind: str, progress: float) -> float:
    """Weight of the start value at `progress`, clamped to [0, 1] (constant: always 1)."""
    return SCHEDULES.get(kind)(min(max(progress, 0.0), 1.0))


def interpolate(kind: str, start: float, end: float, progress: float) -> float:
    """Value moving from `start` (progress 0) to `end` (progress 1) along the schedule's shape."""
    return end + (start - end) * decay_factor(kind, progress)
