"""``nt-llm report RUN [RUN ...] [--plot loss.png] > table.md``: compare finished runs (nt_llm.report).

The table is the command's output, on stdout; what it logs (where the plot went, errors) goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nt_llm.cli.common import EXIT_BAD_INPUT, setup_logging

SUMMARY = "compare runs' final metrics (a table) and validation curves"
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=SUMMARY)
    parser.add_argument(
        "runs", nargs="+", type=Path, help="run folders (each with a metrics.jsonl); the last is the baseline"
    )
    parser.add_argument("--plot", type=Path, help="also write the validation curves to this PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from nt_llm import report  # here, not at the top: see nt_llm.cli

    try:
        if args.plot is not None:
            report.pyplot()  # before any output: a missing extra fails the command before the table is printed
        sys.stdout.write(report.comparison_table(args.runs) + "\n")
        sys.stdout.flush()
        if args.plot is not None:
            log.info("validation curves: %s", report.plot_validation_loss(args.runs, args.plot))
    except (FileNotFoundError, ValueError, report.MissingExtraError) as err:
        log.error("%s", err)
        return EXIT_BAD_INPUT
    return 0
