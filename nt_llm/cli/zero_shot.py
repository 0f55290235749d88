"""``nt-llm zero-shot --model MODEL``: the paper's lm-eval zero-shot tasks on a model folder, a checkpoint or a run
(nt_llm.zeroshot.run says what is evaluated and how).

    nt-llm zero-shot --model MODEL [--tasks boolq,piqa] [--offline] [--limit N] [--device auto]
                     [--output FILE] [--update-card] [--log-file FILE]

Writes the lm-eval results as JSON and a markdown table next to it, and prints the table on stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nt_llm.cli.common import EXIT_BAD_INPUT, setup_logging

SUMMARY = "the paper's lm-eval zero-shot tasks on a model folder"
logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    # Here, not at the top: see nt_llm.cli.
    from nt_llm.zeroshot.run import AUTO_DEVICE, DEFAULT_TASKS_DIR
    from nt_llm.zeroshot.tasks import PAPER_TASKS

    parser = argparse.ArgumentParser(description=SUMMARY)
    parser.add_argument(
        "--model",
        type=Path,
        required=True,
        help="a model folder (an nt_llm export or any causal LM: config.json, weights, tokenizer), a step_<N> "
        "checkpoint or a run folder (its newest checkpoint, exported to a temporary folder first)",
    )
    parser.add_argument(
        "--tasks",
        default=",".join(PAPER_TASKS),
        help="comma-separated lm-eval tasks or groups (default: the paper's; 'mmlu' separately)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use the local task copies (nt-llm prepare-tasks) and never touch the Hub",
    )
    parser.add_argument("--tasks-dir", type=Path, default=DEFAULT_TASKS_DIR, help="folder of the offline tasks")
    parser.add_argument("--limit", type=int, default=None, help="documents per task (for smoke tests only)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--device",
        default=AUTO_DEVICE,
        help="auto (default: cuda when torch sees it, else cpu, as nt-llm evaluate), cpu, cuda, cuda:0, ...",
    )
    parser.add_argument(
        "--max-length", type=int, default=None, help="context in tokens (default: the model's max_position_embeddings)"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="results JSON (default: out/zero_shot/<model folder name>.json)"
    )
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="also keep the scores in the model folder (an nt_llm export: nt_llm_zero_shot.json) and add them to its "
        "model card (README.md); the card's model-index gets them when every document was scored (no --limit)",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="send lm-eval's step-by-step log here; the terminal keeps this tool's messages, "
        "errors, the progress bars and the table",
    )
    return parser


class _OwnOrError(logging.Filter):
    """This tool's records and anyone's errors: lm-eval logs each step at INFO and its routine notices
    (such as overriding num_fewshot for a 0-shot run) as warnings."""

    def __init__(self, own: set[str]) -> None:
        super().__init__()
        self.own = own

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name in self.own or record.levelno >= logging.ERROR


def configure_logging(log_file: Path | None) -> list[logging.Handler]:
    """Everything on the terminal; or, with a log file, everything in the file and the essentials on the
    terminal. Returns the handlers it added to the root logger."""
    from nt_llm.zeroshot import run, tasks

    handlers = setup_logging(log_file, _OwnOrError({logger.name, run.logger.name, tasks.logger.name}))
    if log_file is not None:
        # datasets' "Generating validation split" and transformers' "Loading weights" bars say nothing here.
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
    return handlers


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.offline:
        # Read by datasets at import, which has not happened yet in this process: nt_llm.cli imports a command's
        # libraries only when it runs.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    configure_logging(args.log_file)
    from nt_llm.trained import open_trained
    from nt_llm.zeroshot.run import (
        ZeroShotSettings,
        evaluate_folder,
        markdown_table,
        output_name,
        update_card,
        write_results,
    )
    from nt_llm.zeroshot.tasks import PrepareError

    try:
        settings = ZeroShotSettings(
            tasks=args.tasks.split(","),
            offline=args.offline,
            tasks_dir=args.tasks_dir,
            limit=args.limit,
            batch_size=args.batch_size,
            device=args.device,
            max_length=args.max_length,
        )
        trained = open_trained(args.model)
        if args.update_card:  # before minutes of evaluation, not after
            _require_export(args.model)
        results = evaluate_folder(trained, settings)
    except (PrepareError, ValueError, FileNotFoundError) as err:  # ValueError: also TrainedModelError
        logger.error("%s", err)
        return EXIT_BAD_INPUT
    except ConnectionError as err:  # the stock tasks' data lives on the Hub
        logger.error("%s; without the Hub, add --offline (local task copies, nt-llm prepare-tasks)", err)
        return EXIT_BAD_INPUT
    if not results:  # a non-main process of `accelerate launch`: rank 0 writes
        return 0
    output = args.output or Path("out") / "zero_shot" / f"{output_name(trained)}.json"
    json_path, table_path = write_results(results, output)
    sys.stdout.write(markdown_table(results) + "\n")
    logger.info("results: %s, table: %s", json_path, table_path)
    if args.update_card:
        try:
            logger.info("model card with the scores: %s", update_card(args.model, results))
        except ValueError as err:  # the results are written: only the card could not take them
            logger.error("%s", err)
            return EXIT_BAD_INPUT
    return 0


def _require_export(model_dir: Path) -> None:
    from nt_llm import export

    try:
        export.require_export(model_dir)
    except export.ExportError as err:
        raise ValueError(f"--update-card: {err}") from err
