"""nt-llm: one command for the project's tools.

    nt-llm train --recipe recipes/neurotrails_tiny.yaml [section.key=value ...] [--resume latest|PATH] [--restart]
    accelerate launch -m nt_llm.cli train --recipe ...        # several processes (or: accelerate launch pretrain.py)
    nt-llm export RUN_OR_CHECKPOINT OUT [--push-to-hub ID]
    nt-llm report RUN [RUN ...] [--plot loss.png]
    nt-llm COMMAND --help                                     # each command's own flags

Each command is a module here with ``SUMMARY`` (its line in ``nt-llm --help``) and ``main(argv) -> exit code``.
A command module imports the library it drives inside its functions, not at the top: ``nt-llm`` loads only the
chosen command's dependencies, and ``zero-shot --offline`` sets HF_DATASETS_OFFLINE before anything imports
datasets. Logging is set up by nt_llm.cli.common.setup_logging, and bad input exits with EXIT_BAD_INPUT (2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nt_llm.cli import (
    ablate,
    compare,
    evaluate,
    export,
    head_gradients,
    prepare_data,
    prepare_tasks,
    report,
    reproduce,
    sweep,
    train,
    zero_shot,
)
from nt_llm.cli.common import EXIT_BAD_INPUT, PROG


@dataclass(frozen=True)
class Command:
    """A subcommand: the ``main(argv) -> exit code`` it runs and its line in ``nt-llm --help``."""

    main: Callable[[list[str]], int]
    summary: str


COMMANDS: dict[str, Command] = {
    "train": Command(train.main, train.SUMMARY),
    "export": Command(export.main, export.SUMMARY),
    "report": Command(report.main, report.SUMMARY),
    "evaluate": Command(evaluate.main, evaluate.SUMMARY),
    "prepare-data": Command(prepare_data.main, prepare_data.SUMMARY),
    "prepare-tasks": Command(prepare_tasks.main, prepare_tasks.SUMMARY),
    "zero-shot": Command(zero_shot.main, zero_shot.SUMMARY),
    "reproduce": Command(reproduce.main, reproduce.SUMMARY),
    "sweep": Command(sweep.main, sweep.SUMMARY),
    "ablate": Command(ablate.main, ablate.SUMMARY),
    "compare": Command(compare.main, compare.SUMMARY),
    "head-gradients": Command(head_gradients.main, head_gradients.SUMMARY),
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
        return command.main(rest)
    finally:
        sys.argv = saved
