"""Initial per-tensor densities: uniform and ERK against its closed form."""

import math

import pytest

from nt_llm.sparse.distribution import erk_densities, target_nonzeros, uniform_densities

SHAPES = {"a": (64, 32), "b": (32, 32), "c": (10, 32), "d": (16, 8)}


def _total(shapes):
    return sum(math.prod(s) for s in shapes.values())


def test_uniform_gives_every_tensor_the_target():
    assert uniform_densities(SHAPES, 0.3) == dict.fromkeys(SHAPES, 0.3)


def test_erk_matches_closed_form_without_rebalancing():
    density = 0.2
    got = erk_densities(SHAPES, density)
    # closed form: d_l = eps * (n_in + n_out) / (n_in * n_out), eps = D * N / sum_l (n_in + n_out)
    eps = density * _total(SHAPES) / sum(sum(s) for s in SHAPES.values())
    for name, (o, i) in SHAPES.items():
        assert got[name] == pytest.approx(eps * (o + i) / (o * i), rel=1e-12)
        assert got[name] < 1.0
    kept = sum(got[n] * math.prod(s) for n, s in SHAPES.items())
    assert kept == pytest.approx(density * _total(SHAPES), rel=1e-12)


def test_erk_rebalances_tensors_that_would_exceed_one():
    density = 0.6
    got = erk_densities(SHAPES, density)
    assert got["d"] == 1.0  # the small 16x8 layer would get density > 1
    sparse = {n: s for n, s in SHAPES.items() if got[n] < 1.0}
    budget = density * _total(SHAPES) - sum(math.prod(SHAPES[n]) for n in SHAPES if got[n] == 1.0)
    eps = budget / sum(sum(s) for s in sparse.values())
    for name, (o, i) in sparse.items():
        assert got[name] == pytest.approx(eps * (o + i) / (o * i), rel=1e-12)
        assert got[name] <= 1.0
    kept = sum(got[n] * math.prod(s) for n, s in SHAPES.items())
    assert kept == pytest.approx(density * _total(SHAPES), rel=1e-12)


def test_global_density_in_integer_counts_hits_the_target():
    for density in (0.1, 0.5, 0.9):
        got = erk_densities(SHAPES, density)
        n = sum(target_nonzeros(math.prod(s), got[k]) for k, s in SHAPES.items())
        assert abs(n - density * _total(SHAPES)) <= len(SHAPES)


def test_bad_density_is_rejected():
    with pytest.raises(ValueError, match="density must be in"):
        erk_densities(SHAPES, 0.0)
