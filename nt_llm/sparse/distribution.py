"""Initial density per tensor for a global target density: uniform and Erdos-Renyi-Kernel (ERK)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from nt_llm.sparse.registry import Registry

# name -> f(shapes, density, power_scale) -> density per tensor
Distribution = Callable[[Mapping[str, Sequence[int]], float, float], dict[str, float]]
DISTRIBUTIONS: Registry[Distribution] = Registry("distribution")


def uniform_densities(
    shapes: Mapping[str, Sequence[int]], density: float, power_scale: float = 1.0
) -> dict[str, float]:
    """Every tensor gets the global density (power_scale is ERK's and unused here)."""
    del power_scale
    _check_density(density)
    return dict.fromkeys(shapes, density)


def erk_raw_score(shape: Sequence[int]) -> float:
    """ERK's unnormalised density, sum(shape) / prod(shape): wide, thin layers get sparser.

    For a linear layer (n_out, n_in) this is Erdos-Renyi's (n_in + n_out) / (n_in * n_out); for
    higher-rank kernels the extra dims are part of both sums, as in RigL's ERK.
    """
    if len(shape) == 0 or any(d <= 0 for d in shape):
        raise ValueError(f"ERK needs a non-empty tensor, got shape {tuple(shape)}")
    return sum(shape) / math.prod(shape)


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float, power_scale: float = 1.0) -> dict[str, float]:
    """Densities proportional to erk_raw_score**power_scale with the same total nonzeros as `density` overall.

    A tensor whose scaled density would exceed 1 is made dense and the scale re-solved over the
    others, until none exceeds 1 (the usual ERK re-balancing).
    """
    _check_density(density)
    if not shapes:
        return {}
    numels = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: erk_raw_score(shape) ** power_scale for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(numels.values()) - sum(numels[n] for n in dense)
        weighted = sum(raw[n] * numels[n] for n in shapes if n not in dense)
        if weighted <= 0:
            raise ValueError(f"density={density} cannot be reached: every tensor would be dense")
        eps = budget / weighted
        over = {n for n in shapes if n not in dense and eps * raw[n] > 1.0}
        if not over:
            break
        dense |= over
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


DISTRIBUTIONS.register("uniform")(uniform_densities)
DISTRIBUTIONS.register("erk")(erk_densities)


def target_nonzeros(numel: int, density: float) -> int:
    """Nonzeros a tensor keeps at `density`: rounded, at least one so no tensor is cut off entirely."""
    return max(1, min(numel, round(density * numel)))


def layer_densities(
    shapes: Mapping[str, Sequence[int]], density: float, distribution: str, power_scale: float = 1.0
) -> dict[str, float]:
    """Dispatch on the distribution name (validated by SparsityConfig)."""
    return DISTRIBUTIONS.get(distribution)(shapes, density, power_scale)


def _check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
