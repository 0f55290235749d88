"""Sweep NeuroTrails over head depth and density: the paper's "Goldilocks" analysis of prediction diversity
against accuracy, with the same outputs as ``nt-llm reproduce`` (results.md/json, loss.png, diversity.png).

Every grid point trains with the same data, token budget and seeds; a density of 1 is TreeNet at that depth.

    nt-llm sweep --head-layers 2,4,6 --density 0.5,0.9 --lr 4e-3      # cpu-4m, embedded corpus, 4k pieces
    nt-llm sweep --size cpu-7m --head-layers 2,4 --density 0.3,0.6,0.9 --steps 1000 --seeds 0,1
"""

from __future__ import annotations

import argparse

from nt_llm import methods
from nt_llm.study.reproduce import RunSpec, add_common_arguments, parse_list, run_cli

SWEPT = "neurotrails"  # the method swept; at density 1 its dense form (TreeNet)


def grid_specs(head_layers: list[int], densities: list[float], seeds: list[int]) -> list[RunSpec]:
    """One run per (head depth, density, seed); density 1 means no sparsity (TreeNet)."""
    for layers in head_layers:
        if layers < 1:
            raise ValueError(f"--head-layers must be >= 1, got {layers}")
    for density in densities:
        if not 0 < density <= 1:
            raise ValueError(f"--density must be in (0, 1], got {density}")
    return [
        RunSpec(
            label=f"h{layers}_d{density:g}",
            method=methods.get(SWEPT).at_density(density),
            head_layers=layers,
            density=density,
            seed=seed,
        )
        for seed in seeds
        for layers in head_layers
        for density in densities
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--head-layers", type=lambda t: parse_list(t, int), default=[1, 2, 3])
    parser.add_argument("--density", type=lambda t: parse_list(t, float), default=[0.5, 0.9])
    parser.set_defaults(out=parser.get_default("out").with_name("sweep"))
    args = parser.parse_args(argv)
    return run_cli(args, lambda: grid_specs(args.head_layers, args.density, args.seeds), "Head depth x density sweep")
