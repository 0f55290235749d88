"""Small-sample statistics for comparing training runs over seeds: mean, spread and paired intervals.

A study trains every method once per seed with the same data order within a seed, so methods are compared
seed by seed (a paired design): the interval is on the mean of the per-seed differences, which removes the
variation that the seed causes in both methods alike.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t (t_{0.975, df}) for df = 1..30, from the standard tables.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}; beyond the table, the normal quantile with the first-order correction (error < 0.002)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    return _Z975 + (_Z975**3 + _Z975) / (4 * df)


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval (``low == high == mean`` for a single value)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}

    def text(self) -> str:
        """``+1.23 [-0.50, +2.96]`` as the studies' tables print it; the mean alone for a single value."""
        if self.n < 2:
            return f"{self.mean:+.2f}"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def mean_interval(values: list[float]) -> Interval:
    """95% t-interval of the mean of ``values``."""
    if not values:
        raise ValueError("no values to summarise")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Interval(mean, mean, mean, 1)
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Interval:
    """Mean of ``a[s] - b[s]`` over the seeds both have, with its 95% interval."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two methods share no seed: nothing to pair")
    return mean_interval([a[s] - b[s] for s in seeds])
