"""``nt-llm reproduce``: the paper's four methods over seeds at CPU scale (nt_llm.study.reproduce parses its
own flags)."""

from __future__ import annotations

from nt_llm.cli.common import setup_logging

SUMMARY = "the paper's four methods over seeds at CPU scale"


def main(argv: list[str]) -> int:
    from nt_llm.study import reproduce  # here, not at the top: see nt_llm.cli

    setup_logging()
    return reproduce.main(argv)
