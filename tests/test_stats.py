"""Paired intervals for the seed-by-seed comparison of methods, on examples worked out by hand."""

import math

import pytest

from nt_llm.stats import mean_interval, paired_difference, t_quantile_975


def test_paired_difference_on_a_constructed_example() -> None:
    # Differences b - a per seed: -2, -4, -3 -> mean -3, sample sd 1, half-width t(0.975, 2) * 1 / sqrt(3).
    a = {0: 100.0, 1: 110.0, 2: 90.0}
    b = {0: 98.0, 1: 106.0, 2: 87.0, 7: 1.0}  # seed 7 has no partner and is left out
    diff = paired_difference(b, a)
    half = 4.303 / math.sqrt(3)
    assert diff.n == 3
    assert diff.mean == pytest.approx(-3.0)
    assert (diff.low, diff.high) == pytest.approx((-3.0 - half, -3.0 + half))
    assert diff.excludes_zero  # [-5.48, -0.52]


def test_pairing_removes_the_seed_effect() -> None:
    # A constant gap of 1 under a large seed effect: the paired interval is exact, the unpaired one is wide.
    a = {0: 50.0, 1: 80.0, 2: 120.0}
    b = {s: v - 1.0 for s, v in a.items()}
    diff = paired_difference(b, a)
    assert (diff.mean, diff.low, diff.high) == pytest.approx((-1.0, -1.0, -1.0))
    unpaired = mean_interval(list(b.values()))
    assert unpaired.high - unpaired.low > 100


def test_an_interval_that_spans_zero_and_a_single_seed() -> None:
    assert not paired_difference({0: 1.0, 1: -1.0}, {0: 0.0, 1: 0.0}).excludes_zero
    single = mean_interval([2.5])
    assert (single.mean, single.low, single.high, single.n) == (2.5, 2.5, 2.5, 1)
    assert not single.excludes_zero  # one seed says nothing about the spread
    with pytest.raises(ValueError, match="share no seed"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_t_quantiles() -> None:
    assert t_quantile_975(1) == 12.706 and t_quantile_975(2) == 4.303
    # Beyond the table the approximation stays within 0.002 of the true values (t_40 = 2.021, t_120 = 1.980).
    assert t_quantile_975(40) == pytest.approx(2.021, abs=2e-3)
    assert t_quantile_975(120) == pytest.approx(1.980, abs=2e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)
