"""Prune and growth criteria, and the exact top-k selection both use.

Every criterion returns a score tensor shaped like the weight where a higher score means "keep"
(prune criteria) or "grow first" (growth criteria). Selection is always an exact count, so a
tensor never drifts from its target number of nonzeros, whatever the ties in the scores.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from nt_llm.sparse.registry import Registry

logger = logging.getLogger(__name__)


class PruneCriterion(ABC):
    """Scores shaped like the weight; the highest-scoring active positions are kept."""

    @abstractmethod
    def scores(self, weight: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
        """`weight` is the full tensor (fp32 master under DeepSpeed); `generator` is this tensor's stream."""


class GrowthCriterion(ABC):
    """Scores shaped like the weight; the highest-scoring inactive positions grow.

    A criterion that reads the dense (unmasked, all-reduced) gradient sets `needs_dense_grad`:
    only then do the engines gather full gradients at an update.
    """

    needs_dense_grad: ClassVar[bool] = False

    @abstractmethod
    def scores(
        self, grad: torch.Tensor | None, shape: torch.Size, device: torch.device, generator: torch.Generator
    ) -> torch.Tensor:
        """`grad` is the full dense gradient when `needs_dense_grad`, else None."""


PRUNE_CRITERIA: Registry[type[PruneCriterion]] = Registry("prune criterion")
GROWTH_CRITERIA: Registry[type[GrowthCriterion]] = Registry("growth criterion")


@PRUNE_CRITERIA.register("magnitude")
class MagnitudePrune(PruneCriterion):
    """Keep the largest |w|; temperature and generator are unused (hard magnitude)."""

    def scores(self, weight: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
        del temperature, generator
        return weight.detach().abs().float()


@PRUNE_CRITERIA.register("soft_magnitude")
class SoftMagnitudePrune(PruneCriterion):
    """Scores whose top-n is a sample of n positions without replacement with P(keep) ~ |w|**T.

    Gumbel-top-k: adding independent Gumbel noise to log-probabilities and taking the n largest is
    exactly successive sampling without replacement, and unlike torch.multinomial it has no 2**24
    category limit. T=0 makes every position equally likely; a large T approaches hard magnitude.
    """

    def scores(self, weight: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
        noise = _gumbel(weight.shape, generator, weight.device)
        if temperature == 0.0:
            return noise
        # log(0) = -inf: a zero weight is kept only once every nonzero weight is. In place on abs()'s
        # fresh copy: one tensor-sized buffer less at an update.
        return weight.detach().abs().float().log_().mul_(temperature).add_(noise)


@GROWTH_CRITERIA.register("random")
class RandomGrowth(GrowthCriterion):
    """SET."""

    def scores(
        self, grad: torch.Tensor | None, shape: torch.Size, device: torch.device, generator: torch.Generator
    ) -> torch.Tensor:
        del grad  # every inactive position is equally likely to grow
        return _rand(shape, generator, device)


@GROWTH_CRITERIA.register("gradient")
class GradientGrowth(GrowthCriterion):
    """RigL."""

    needs_dense_grad = True

    def scores(
        self, grad: torch.Tensor | None, shape: torch.Size, device: torch.device, generator: torch.Generator
    ) -> torch.Tensor:
        del generator  # grow where the dense gradient is largest in magnitude
        if grad is None:
            raise ValueError("gradient growth needs the dense gradient at update steps, but none was captured")
        if grad.shape != shape:
            raise ValueError(f"gradient shape {tuple(grad.shape)} does not match weight shape {tuple(shape)}")
        return grad.detach().abs().float().to(device)


def select_top(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
    n_candidates: int | None = None,
    scratch: bool = False,
) -> torch.Tensor:
    """Boolean mask of exactly k candidate positions with the highest scores.

    One k-th-value threshold over the whole tensor (O(n), no sort and no index gathering), then
    ties at the threshold are filled in index order up to k. Non-candidates rank below every
    candidate, -inf candidate scores included, so they can never be picked. `scratch=True` lets
    it overwrite a float32 `scores` instead of copying it (one tensor less at update time).
    """
    n = int(torch.count_nonzero(candidates)) if n_candidates is None else n_candidates
    if not 0 <= k <= n:
        raise ValueError(f"cannot select {k} positions out of {n} candidates")
    if k == 0:
        return torch.zeros_like(candidates)
    if k == n:
        return candidates.clone()
    lowest = torch.finfo(torch.float32).min
    if scratch and scores.dtype == torch.float32:
        ranked = scores.clamp_(min=lowest)
    else:
        ranked = scores.float().clamp(min=lowest)
    ranked = ranked.masked_fill_(~candidates, float("-inf")).reshape(-1)
    threshold = kth_largest(ranked, k)
    # With distinct scores exactly k reach the threshold; only ties at it need the (full-size)
    # index list, to keep the lowest-index ones.
    out = ranked >= threshold
    excess = int(torch.count_nonzero(out)) - k
    if excess > 0:
        ties = (ranked == threshold).nonzero().squeeze(1)
        out[ties[ties.numel() - excess :]] = False
    return out.view_as(candidates)


# Below this size a plain kthvalue is as cheap as bracketing it from a sample.
_SAMPLED_KTH_MIN_NUMEL = 1 << 20
_SAMPLE_SIZE = 1 << 16


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest entry of a 1-D tensor, exactly.

    For large tensors a strided sample brackets the answer, one counting pass checks the bracket
    and kthvalue runs on the (small) band inside it: several times cheaper than kthvalue over the
    whole tensor on CPU. If the bracket misses (unlucky sample), the whole tensor is used.
    """
    n = values.numel()
    rank = n - k + 1  # position from the bottom, 1-based, as kthvalue counts
    if n < _SAMPLED_KTH_MIN_NUMEL:
        return torch.kthvalue(values, rank).values
    sample = values[:: n // _SAMPLE_SIZE]
    s = sample.numel()
    q = rank / n
    margin = 6.0 * math.sqrt(s * q * (1.0 - q)) + 8.0  # about 6 standard deviations of the sample rank
    lo = torch.kthvalue(sample, max(1, math.floor(q * s - margin))).values
    hi = torch.kthvalue(sample, min(s, math.ceil(q * s + margin))).values
    below = int(torch.count_nonzero(values < lo))
    band = values[(values >= lo) & (values <= hi)]
    if below < rank <= below + band.numel():
        return torch.kthvalue(band, rank - below).values
    logger.debug("kth_largest: sampled bracket missed, falling back to a full kthvalue")
    return torch.kthvalue(values, rank).values


def random_mask(shape: torch.Size, n_active: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Exactly n_active positions chosen uniformly at random (the initial topology)."""
    numel = shape.numel()
    if not 0 <= n_active <= numel:
        raise ValueError(f"cannot activate {n_active} of {numel} positions")
    mask = torch.zeros(numel, dtype=torch.bool, device=generator.device)
    mask[torch.randperm(numel, generator=generator, device=generator.device)[:n_active]] = True
    return mask.view(shape).to(device)


def update_mask(
    mask: torch.Tensor,
    keep_scores: torch.Tensor,
    grow_scores: torch.Tensor,
    n_prune: int,
    n_target: int,
    n_active: int | None = None,
) -> torch.Tensor:
    """One prune-then-grow step on one tensor: returns the new mask (the score tensors are consumed).

    Drops the n_prune active positions with the lowest keep score, then grows the highest-scoring
    inactive positions until exactly n_target are active. A just-pruned position may win the
    growth too; it then simply stays active (with its weight and optimizer state). Pass `n_active`
    when it is known, to spare a device sync.
    """
    if n_active is None:
        n_active = int(torch.count_nonzero(mask))
    n_keep = n_active - n_prune
    if n_keep < 0 or n_keep > n_target:
        raise ValueError(f"n_prune={n_prune} leaves {n_keep} of {n_active} active, outside [0, n_target={n_target}]")
    kept = select_top(keep_scores, mask, n_keep, n_candidates=n_active, scratch=True)
    grown = select_top(grow_scores, ~kept, n_target - n_keep, n_candidates=mask.numel() - n_keep, scratch=True)
    return kept | grown


def _rand(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # Drawn on the generator's device (the weight's, for the per-tensor streams DST makes): no
    # host-to-device copy of a tensor-sized buffer.
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _gumbel(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # -log(-log(u)); the clamp keeps it finite (an infinite key + log(0) = nan). In place, since
    # this runs over every weight at an update.
    u = _rand(shape, generator, device).clamp_(min=torch.finfo(torch.float32).tiny, max=1.0 - 1e-7)
    return u.log_().neg_().log_().neg_()
