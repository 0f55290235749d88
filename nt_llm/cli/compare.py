"""``nt-llm compare STUDY:LABEL[=NAME] ... > table.md``: studies' rows paired by seed (nt_llm.study.compare).

The tables are the command's output, on stdout; warnings and errors go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

from nt_llm.cli.common import EXIT_BAD_INPUT, setup_logging

SUMMARY = "put rows of finished studies side by side, paired by seed (e.g. a tokens-matched control)"
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=SUMMARY)
    parser.add_argument(
        "rows",
        nargs="+",
        metavar="STUDY:LABEL[=NAME]",
        help="a study's --out folder and one of its rows (results.json's labels: dense, neurotrails, h6_d0.5, ...), "
        "optionally with the name to print; two or more",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from nt_llm.study.compare import compare  # here, not at the top: see nt_llm.cli

    try:
        text = compare(args.rows)
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return EXIT_BAD_INPUT
    sys.stdout.write(text + "\n")
    return 0
