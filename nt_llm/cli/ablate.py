"""``nt-llm ablate``: NeuroTrails with one setting changed at a time (nt_llm.study.ablate parses its own flags)."""

from __future__ import annotations

from nt_llm.cli.common import setup_logging

SUMMARY = "NeuroTrails with one setting changed at a time"


def main(argv: list[str]) -> int:
    from nt_llm.study import ablate  # here, not at the top: see nt_llm.cli

    setup_logging()
    return ablate.main(argv)
