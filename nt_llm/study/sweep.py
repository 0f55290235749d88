"""Sweep NeuroTrails over head depth and density: the paper's "Goldilocks" analysis of prediction diversity
against accuracy, with the same outputs as ``nt-llm reproduce`` (results.md/json, loss.png, diversity.png).

Every grid point trains with the same data, token budget and seeds; a density of 1 is TreeNet at that depth. Beside
them: ``goldilocks.png`` (ensemble perplexity and top-1 disagreement against head layers, a line per density), the
grid as a table in results.md and as "grid" in results.json (``nt_llm.study.goldilocks``). ``--reference`` takes a
finished ``nt-llm reproduce --methods dense,full_ensemble`` study's ``--out`` with the same budget and setup: its
dense model and full ensemble become dashed reference lines (and "reference" in results.json).

    nt-llm sweep --head-layers 2,4,6 --density 0.5,0.9 --lr 4e-3      # cpu-4m, embedded corpus, 4k pieces
    nt-llm sweep --size cpu-7m --head-layers 2,4 --density 0.3,0.6,0.9 --steps 1000 --seeds 0,1
    nt-llm reproduce --methods dense,full_ensemble --lr 2e-3 --seeds 0,1 --out out/reference
    nt-llm sweep --head-layers 1,2,3 --density 0.5,0.9,1 --lr 2e-3 --seeds 0,1 --reference out/reference
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nt_llm import methods
from nt_llm.study.goldilocks import Reference, grid_summary, load_reference, write_goldilocks
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
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="a finished `nt-llm reproduce` study's --out with dense and full_ensemble rows at this sweep's budget "
        "and setup: drawn as reference lines in goldilocks.png",
    )
    parser.set_defaults(out=parser.get_default("out").with_name("sweep"))
    args = parser.parse_args(argv)
    reference: Reference | None = None

    def specs() -> list[RunSpec]:
        nonlocal reference
        grid = grid_specs(args.head_layers, args.density, args.seeds)
        # Read here, inside run_cli's checks: a reference the sweep cannot draw refuses it before anything trains.
        if args.reference is not None:
            reference = load_reference(args.reference, args)
        return grid

    def report(specs: list[RunSpec], rows: list[dict[str, Any]]) -> None:
        write_goldilocks(args.out, grid_summary(specs, rows), reference)

    return run_cli(args, specs, "Head depth x density sweep", report)
