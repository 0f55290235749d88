"""``nt-llm head-gradients``: how far the heads' gradients agree (nt_llm.study.head_gradients parses its own flags)."""

from __future__ import annotations

from nt_llm.cli.common import setup_logging

SUMMARY = "how far the heads' gradients agree"


def main(argv: list[str]) -> int:
    from nt_llm.study import head_gradients  # here, not at the top: see nt_llm.cli

    setup_logging()
    return head_gradients.main(argv)
