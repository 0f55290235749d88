"""Pretrain a NeuroTrails LLaMA (or a baseline) from a recipe.

    accelerate launch pretrain.py --recipe recipes/neurotrails_tiny.yaml [section.key=value ...] [--resume latest|PATH]
    python pretrain.py --recipe recipes/neurotrails_tiny.yaml          # one process

A run folder that holds a previous run is refused unless --resume continues it or --restart starts anew (the
previous run is moved to <folder>.previous-<date>-<time>, nothing is deleted).
"""

import argparse
import logging
import sys

from nt_llm.train import NonFiniteLossError, RecipeError, load_recipe, train
from nt_llm.checkpoint import CheckpointError

EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_INTERRUPTED = 2, 3, 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="a recipe YAML, e.g. recipes/neurotrails_tiny.yaml")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", help="'latest' (the run's newest checkpoint, if any) or a checkpoint folder")
    start.add_argument(
        "--restart",
        action="store_true",
        help="start anew in a run folder that holds a previous run, after moving that run aside",
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-3 data.batch_size=4")
    # Intermixed: overrides may come before or after the options (`--resume latest optim.lr=1e-3`).
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("pretrain")
    try:
        result = train(load_recipe(args.recipe, args.overrides), resume=args.resume, restart=args.restart)
    except (RecipeError, CheckpointError, FileNotFoundError) as err:
        log.error("%s", err)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as err:
        log.error("%s", err)
        return EXIT_NON_FINITE
    return EXIT_INTERRUPTED if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
