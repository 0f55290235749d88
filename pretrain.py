"""Pretrain a NeuroTrails LLaMA (or a baseline) from a recipe.

    accelerate launch pretrain.py --recipe recipes/neurotrails_tiny.yaml [section.key=value ...] [--resume latest|PATH]
    python pretrain.py --recipe recipes/neurotrails_tiny.yaml          # one process
"""

import argparse
import logging
import sys

from nt_llm.train import NonFiniteLossError, RecipeError, load_recipe, train
from nt_llm.train.checkpoint import CheckpointError

EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_INTERRUPTED = 2, 3, 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="a recipe YAML, e.g. recipes/neurotrails_tiny.yaml")
    parser.add_argument("--resume", help="'latest' (the run's newest checkpoint, if any) or a checkpoint folder")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-3 data.batch_size=4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = train(load_recipe(args.recipe, args.overrides), resume=args.resume)
    except (RecipeError, CheckpointError, FileNotFoundError) as err:
        logging.getLogger("pretrain").error("%s", err)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as err:
        logging.getLogger("pretrain").error("%s", err)
        return EXIT_NON_FINITE
    return EXIT_INTERRUPTED if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
