"""``nt-llm train``: pretrain from a recipe (also ``pretrain.py`` and ``accelerate launch -m nt_llm.cli train``).

A run folder that holds a previous run is refused unless ``--resume`` continues it or ``--restart`` starts anew (the
previous run is moved to <folder>.previous-<date>-<time>, nothing is deleted).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from nt_llm.cli.common import EXIT_BAD_INPUT, setup_logging

SUMMARY = "pretrain a NeuroTrails LLaMA (or a baseline) from a recipe"
EXIT_NON_FINITE, EXIT_INTERRUPTED = 3, 130


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=SUMMARY)
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


def main(argv: Sequence[str] | None = None) -> int:
    """0 when the run finished, 2 on bad input (named), 3 on a non-finite loss, 130 when interrupted (a checkpoint
    is written first)."""
    args = parse_args(argv)
    # Here, not at the top: the other commands do not load the trainer (see nt_llm.cli).
    from nt_llm.checkpoint import CheckpointError
    from nt_llm.train import NonFiniteLossError, RecipeError, load_recipe, train

    setup_logging()
    log = logging.getLogger("pretrain")  # the name the run's log has always shown (and its tests filter on)
    try:
        result = train(load_recipe(args.recipe, args.overrides), resume=args.resume, restart=args.restart)
    except (RecipeError, CheckpointError, FileNotFoundError) as err:
        log.error("%s", err)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as err:
        log.error("%s", err)
        return EXIT_NON_FINITE
    finally:
        leave_process_group()
    return EXIT_INTERRUPTED if result.interrupted else 0


def leave_process_group() -> None:
    """Take down the process group of a multi-process run before the interpreter exits. Left up, gloo's worker
    threads can still hold work when Python finalises, and the process then aborts after the run has finished
    ('terminate called without an active exception', exit -6), which a launcher reports as a failed run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
