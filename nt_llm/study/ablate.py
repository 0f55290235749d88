"""Ablations of NeuroTrails at the reproduction's scale: which setting moves it against its baselines.

Each variant is the reproduction's NeuroTrails run with recipe overrides; the baselines (dense, TreeNet, full
ensemble, and NeuroTrails as the reproduction sets it) train beside them with the same budget, learning rate and
seeds, so the table's paired differences answer "does this variant beat dense / the full ensemble?". With
``--runs-dir`` pointing at the reproduction's runs and its budget, seeds and learning rate, the study's finished
runs are reused rather than retrained.

    nt-llm ablate --variants uniform,all_sparse --steps 150 --seeds 0,1 --lr 2e-3
    nt-llm ablate --variant 'fast:sparsity.update_frequency=5,sparsity.prune_rate=0.2' ...
    nt-llm ablate --variant 'heads2:model.head_layers=2' --lr 2e-3 --seeds 0 --runs-dir out/reproduce/runs

Named variants (``--variants``): see ``VARIANTS``; ``--variant NAME:key=value,...`` adds one of your own.
"""

from __future__ import annotations

import argparse
import json
import re

from nt_llm import methods
from nt_llm.sparse.config import NEUROTRAILS_ALL
from nt_llm.study.reproduce import RunSpec, add_common_arguments, parse_list, run_cli
from nt_llm.train.recipe import RecipeError, parse_override

# The paper's knobs, one at a time from the reproduction's NeuroTrails setting: recipe overrides, as `nt-llm train`
# takes them.
VARIANTS: dict[str, tuple[str, ...]] = {
    "uniform": ("sparsity.distribution=uniform",),
    # The paper's code: backbone + embedding too (JSON is YAML: the patterns' `*` stay quoted).
    "all_sparse": (f"sparsity.include={json.dumps(list(NEUROTRAILS_ALL))}",),
    "prune_rate_0.2": ("sparsity.prune_rate=0.2",),
    "prune_rate_0.8": ("sparsity.prune_rate=0.8",),
    "update_every_5": ("sparsity.update_frequency=5",),
    "update_every_50": ("sparsity.update_frequency=50",),
    "static": ("sparsity.stop_step=0",),  # a fixed random topology: sparsity without DST
    "set_growth": ("sparsity.growth=random",),
}
# A comma that starts the next override (`,section.key=`), not one inside a value (`sparsity.include=[a, b]`).
_NEXT_OVERRIDE = re.compile(r",\s*(?=[A-Za-z_]\w*(?:\.\w+)+\s*=)")
BASELINES = methods.names()  # every registered method; the sparse one in the reproduction's own setting
ABLATED = "neurotrails"  # the method whose knobs the variants change


def parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    """``name:section.key=value,...`` -> (name, overrides), each override checked by the recipe module's parser
    (``nt_llm.train.recipe.parse_override``, as `nt-llm train` reads its overrides); a value may hold commas
    (``sparsity.include=[a, b]``)."""
    name, sep, body = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant must look like NAME:section.key=value,..., got {text!r}")
    overrides = tuple(filter(None, (part.strip() for part in _NEXT_OVERRIDE.split(body))))
    for override in overrides:
        try:
            parse_override(override)
        except RecipeError as err:
            raise argparse.ArgumentTypeError(f"--variant {name}: {err}") from err
    return name, overrides


def variant_specs(
    variants: dict[str, tuple[str, ...]], seeds: list[int], density: float, baselines: bool
) -> list[RunSpec]:
    specs = [
        RunSpec(label=m, method=m, head_layers=None, density=density if methods.get(m).sparse else 1.0, seed=s)
        for s in seeds
        for m in (BASELINES if baselines else ())
    ]
    specs += [
        RunSpec(label=f"nt_{name}", method=ABLATED, head_layers=None, density=density, seed=s, overrides=overrides)
        for s in seeds
        for name, overrides in variants.items()
    ]
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--variants", type=lambda t: parse_list(t, str), default=[], help=f"named variants: {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--variant", type=parse_variant, action="append", default=[], help="NAME:section.key=value,... (repeatable)"
    )
    parser.add_argument("--density", type=float, default=0.9)
    parser.add_argument("--no-baselines", action="store_true", help="only the NeuroTrails variants")
    parser.set_defaults(out=parser.get_default("out").with_name("ablate"))
    args = parser.parse_args(argv)

    def specs() -> list[RunSpec]:
        unknown = sorted(set(args.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
        chosen = {name: VARIANTS[name] for name in args.variants} | dict(args.variant)
        return variant_specs(chosen, args.seeds, args.density, baselines=not args.no_baselines)

    return run_cli(args, specs, "NeuroTrails ablations")
