"""``nt-llm sweep``: NeuroTrails over head depth x density (nt_llm.study.sweep parses its own flags)."""

from __future__ import annotations

from nt_llm.cli.common import setup_logging

SUMMARY = "NeuroTrails over head depth x density"


def main(argv: list[str]) -> int:
    from nt_llm.study import sweep  # here, not at the top: see nt_llm.cli

    setup_logging()
    return sweep.main(argv)
