"""``nt-llm reproduce``: the paper's four methods over seeds at CPU scale (nt_llm.study.reproduce parses its
own flags)."""

from __future__ import annotations

SUMMARY = "the paper's four methods over seeds at CPU scale"


def main(argv: list[str]) -> int:
    from nt_llm.study import reproduce  # here, not at the top: see nt_llm.cli

    return reproduce.main(argv)
