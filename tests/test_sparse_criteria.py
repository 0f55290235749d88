"""Prune/growth criteria, exact selection and schedules on constructed examples."""

import logging
import math

import pytest
import torch

from nt_llm.sparse.criteria import (
    GradientGrowth,
    MagnitudePrune,
    RandomGrowth,
    SoftMagnitudePrune,
    kth_largest,
    random_mask,
    select_top,
    update_mask,
)
from nt_llm.sparse.schedules import decay_factor, interpolate


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_select_top_picks_exact_count_among_candidates_only():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    cand = torch.tensor([False, True, True, True, True, True])
    assert select_top(scores, cand, 2).tolist() == [False, True, True, False, False, False]
    # the "take the rest" branch (k > n - k)
    assert select_top(scores, cand, 4).tolist() == [False, True, True, True, True, False]
    # all-equal (-inf) candidate scores still give an exact count and never a non-candidate
    inf = torch.full((6,), -math.inf)
    got = select_top(inf, cand, 3)
    assert int(got.sum()) == 3 and not got[0]
    with pytest.raises(ValueError, match="cannot select 6 positions out of 5"):
        select_top(scores, cand, 6)


def test_select_top_breaks_ties_at_the_threshold_exactly():
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0])
    cand = torch.ones(7, dtype=torch.bool)
    got = select_top(scores, cand, 4)  # 2.0, 1.0 and two of the five zeros
    assert int(got.sum()) == 4 and got[0] and got[5]
    # candidate -inf scores still rank above non-candidates
    scores = torch.tensor([-math.inf, -math.inf, 3.0, -math.inf])
    cand = torch.tensor([True, True, False, False])
    assert select_top(scores, cand, 2).tolist() == [True, True, False, False]


def test_rigl_grows_exactly_at_top_gradient_inactive_positions():
    weight = torch.tensor([[0.9, -0.8, 0.0, 0.0], [0.1, 0.0, 0.0, -0.05]])
    mask = weight != 0
    grad = torch.tensor([[9.0, 9.0, 0.5, -3.0], [0.2, 2.0, -0.1, 9.0]])  # huge grads on active weights
    keep = MagnitudePrune().scores(weight, 0.0, _gen())
    grow = GradientGrowth().scores(grad, weight.shape, weight.device, _gen())
    new = update_mask(mask, keep, grow, n_prune=2, n_target=4)
    # prunes the two smallest |w| (0.1 and -0.05), grows at the two largest |grad| among the now
    # inactive: -3.0 at (0,3) and 9.0 at the just-pruned (1,3), which therefore stays active
    expected = torch.tensor([[True, True, False, True], [False, False, False, True]])
    assert torch.equal(new, expected)


def test_set_growth_is_uniform_over_inactive_positions():
    numel, trials, k = 40, 4000, 4
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[:10] = True  # active positions never grow
    counts = torch.zeros(numel)
    gen = _gen(123)
    for _ in range(trials):
        grow = RandomGrowth().scores(None, mask.shape, mask.device, gen)
        counts += select_top(grow, ~mask, k).float()
    assert counts[:10].sum() == 0
    observed = counts[10:]
    expected = trials * k / 30
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    # 29 degrees of freedom: the 0.999 quantile is 58.3; a growth biased by position fails this
    assert chi2 < 58.3, chi2


def test_soft_magnitude_with_large_temperature_is_hard_magnitude():
    weight = torch.randn(64, 32)
    mask = torch.ones_like(weight, dtype=torch.bool)
    hard = select_top(MagnitudePrune().scores(weight, 0.0, _gen()), mask, 500)
    soft = select_top(SoftMagnitudePrune().scores(weight, 1e4, _gen(1)), mask, 500)
    assert torch.equal(hard, soft)


def test_soft_magnitude_with_zero_temperature_is_uniform():
    weight = torch.linspace(0.01, 1.0, 20)  # strongly ordered magnitudes
    mask = torch.ones(20, dtype=torch.bool)
    counts = torch.zeros(20)
    gen = _gen(7)
    trials = 3000
    for _ in range(trials):
        counts += select_top(SoftMagnitudePrune().scores(weight, 0.0, gen), mask, 5).float()
    expected = trials * 5 / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8, chi2  # 19 dof, 0.999 quantile
    # and at T=1 the big weights are clearly preferred (so the T=0 result is not trivially uniform)
    counts_t1 = torch.zeros(20)
    for _ in range(trials):
        counts_t1 += select_top(SoftMagnitudePrune().scores(weight, 1.0, gen), mask, 5).float()
    assert counts_t1[-5:].sum() > 2 * counts_t1[:5].sum()


def test_soft_magnitude_keep_frequency_follows_power_of_magnitude():
    # keep 1 of 2: P(keep a) = |a|^T / (|a|^T + |b|^T) = 0.8 for |a|=2, |b|=1, T=2
    weight = torch.tensor([2.0, 1.0])
    mask = torch.ones(2, dtype=torch.bool)
    gen = _gen(3)
    wins = sum(bool(select_top(SoftMagnitudePrune().scores(weight, 2.0, gen), mask, 1)[0]) for _ in range(4000))
    assert abs(wins / 4000 - 0.8) < 0.03


def test_gradient_growth_without_a_gradient_is_an_error():
    with pytest.raises(ValueError, match="dense gradient"):
        GradientGrowth().scores(None, torch.Size([2]), torch.device("cpu"), _gen())


def test_update_mask_keeps_exact_count_when_sparsifying():
    gen = _gen()
    mask = random_mask(torch.Size([50, 20]), 400, gen, torch.device("cpu"))
    weight = torch.randn(50, 20) * mask
    keep = MagnitudePrune().scores(weight, 0, gen)
    new = update_mask(mask, keep, RandomGrowth().scores(None, mask.shape, mask.device, gen), 150, 300)
    assert int(new.sum()) == 300
    assert int((mask & ~new).sum()) - int((new & ~mask).sum()) == 100


def test_random_mask_has_exact_count():
    m = random_mask(torch.Size([7, 9]), 20, _gen(), torch.device("cpu"))
    assert m.dtype == torch.bool and int(m.sum()) == 20


def test_schedules():
    assert decay_factor("constant", 0.7) == 1.0
    assert decay_factor("linear", 0.25) == pytest.approx(0.75)
    assert decay_factor("cosine", 0.5) == pytest.approx(0.5)
    assert decay_factor("cosine", 2.0) == pytest.approx(0.0)  # clamped past the end
    assert interpolate("cosine", 0.5, 0.1, 0.0) == pytest.approx(0.5)
    assert interpolate("cosine", 0.5, 0.1, 1.0) == pytest.approx(0.1)
    assert interpolate("linear", 0.5, 0.1, 0.5) == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"unknown schedule 'step'; known: \('constant'"):
        decay_factor("step", 0.1)


@pytest.mark.parametrize("k", [1, 7, 300_000, 1_000_000, (1 << 20) + 4000])
def test_kth_largest_is_exact_on_large_tensors(k):
    # above the size where the sampled bracket is used, with ties and -inf entries
    values = torch.randn((1 << 20) + 5000).round(decimals=2)
    values[::5] = -math.inf
    assert kth_largest(values, k) == torch.kthvalue(values, values.numel() - k + 1).values


def test_kth_largest_falls_back_when_the_sample_misses(caplog):
    # a strided sample sees only the zeros: its bracket excludes the answer
    values = torch.zeros(1 << 21)
    values[1::2] = torch.arange(1, (1 << 20) + 1, dtype=torch.float32)
    caplog.set_level(logging.DEBUG, logger="nt_llm.sparse.criteria")
    assert kth_largest(values, 10) == (1 << 20) - 9
    assert "falling back" in caplog.text
