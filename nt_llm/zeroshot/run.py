"""Zero-shot evaluation of a model folder (or an in-memory model) with lm-eval, as in the paper.

    nt-llm zero-shot --model DIR [--tasks boolq,piqa] [--offline] [--limit N] [--device cpu]
                     [--output FILE]

Default tasks are the paper's (boolq, arc_easy, piqa, hellaswag, openbookqa, winogrande), 0-shot;
MMLU runs separately (`--tasks mmlu`). `--offline` switches to the local task copies written by
`nt-llm prepare-tasks` (prepared on first use) and forbids Hub access. Writes the lm-eval results as
JSON and a markdown table next to it, and prints the table.

The context length is the model's `max_position_embeddings` (what it was trained for, in an nt_llm
export) unless `--max-length` says otherwise; lm-eval's own fallback would be 2048.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nt_llm.zeroshot import tasks as task_files
from nt_llm.zeroshot.tasks import OFFLINE_PREFIX, PAPER_TASKS, PrepareError, prepare, read_manifest

logger = logging.getLogger(__name__)

DEFAULT_TASKS_DIR = Path("out") / "nt_tasks"  # relative to the working directory, like every output
RESULTS_KEY = "nt_zero_shot"


@dataclass
class ZeroShotSettings:
    """What to evaluate and how; shared by the folder and the in-process paths."""

    tasks: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    offline: bool = False
    tasks_dir: Path = DEFAULT_TASKS_DIR
    limit: int | None = None
    batch_size: int = 8
    device: str = "cpu"
    max_length: int | None = None

    def __post_init__(self) -> None:
        self.tasks = [t.strip() for t in self.tasks if t.strip()]
        if not self.tasks:
            raise ValueError("tasks must name at least one lm-eval task")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or None for every document), got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 tokens, got {self.max_length}")
        self.tasks_dir = Path(self.tasks_dir).expanduser().resolve()

    def lm_eval_tasks(self) -> list[str]:
        """Task names as lm-eval knows them: the offline copies carry the `nt_` prefix."""
        if not self.offline:
            return list(self.tasks)
        return [t if t.startswith(OFFLINE_PREFIX) else OFFLINE_PREFIX + t for t in self.tasks]


def context_length(config: dict[str, Any], override: int | None) -> int:
    """The evaluation context: `override`, else the model's `max_position_embeddings`."""
    if override is not None:
        return override
    value = config.get("max_position_embeddings")
    if not isinstance(value, int) or value < 2:
        raise ValueError(f"config has no usable max_position_embeddings ({value!r}); pass --max-length")
    return value


def read_folder_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder: config.json missing")
    return json.loads(path.read_text(encoding="utf-8"))


def task_manager(settings: ZeroShotSettings) -> Any:
    """lm-eval's TaskManager, with the offline task folder (prepared if missing) when offline."""
    from lm_eval.tasks import TaskManager

    if not settings.offline:
        return TaskManager()
    try:
        manifest = read_manifest(settings.tasks_dir)
    except PrepareError:
        logger.info("preparing offline tasks in %s", settings.tasks_dir)
        manifest = prepare(settings.tasks_dir)
    known = set(manifest.tasks) | set(manifest.groups) | {OFFLINE_PREFIX + "paper", OFFLINE_PREFIX + "offline"}
    unknown = [t for t in settings.lm_eval_tasks() if t not in known]
    if unknown:
        raise ValueError(f"no offline task {unknown} in {settings.tasks_dir}; available: {sorted(known)}")
    # The offline YAMLs include the stock ones by absolute path: indexing lm-eval's ~10k stock YAMLs is not needed.
    return TaskManager(include_path=str(settings.tasks_dir), include_defaults=False)


def _evaluate(
    model: Any, model_args: dict[str, Any] | None, settings: ZeroShotSettings, max_length: int, source: str
) -> dict[str, Any]:
    import lm_eval

    try:
        results = lm_eval.simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=settings.lm_eval_tasks(),
            num_fewshot=0,
            batch_size=settings.batch_size,
            device=settings.device,
            limit=settings.limit,
            task_manager=task_manager(settings),
            log_samples=False,
        )
    except AssertionError as err:
        # lm-eval's HFLM asserts, without a message, that an answer fits the context; with a short training
        # context (the paper's 256 tokens) a long answer choice can break that, minutes into a run.
        if _is_continuation_overflow(err):
            raise ValueError(
                f"an answer choice is longer than max_length={max_length} tokens, which lm-eval "
                "cannot score; pass a larger --max-length (max_length=...)"
            ) from err
        raise
    if results is None:  # only non-zero ranks of a multi-process run get None
        return {}
    results = dict(results)
    results.pop("samples", None)
    results[RESULTS_KEY] = {
        **asdict(settings),
        "tasks_dir": str(settings.tasks_dir),
        "model": source,
        "max_length": max_length,
        "num_fewshot": 0,
    }
    return results


def _is_continuation_overflow(err: AssertionError) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and "len(continuation_enc) <= self.max_length" in (frames[-1].line or "")


def evaluate_folder(model_dir: Path, settings: ZeroShotSettings) -> dict[str, Any]:
    """Evaluate a saved model folder through lm-eval's `hf` model (custom code trusted)."""
    model_dir = Path(model_dir).expanduser().resolve()
    max_length = context_length(read_folder_config(model_dir), settings.max_length)
    model_args = {"pretrained": str(model_dir), "trust_remote_code": True, "max_length": max_length}
    return _evaluate("hf", model_args, settings, max_length, source=str(model_dir))


def evaluate_model(model: Any, tokenizer: Any, settings: ZeroShotSettings) -> dict[str, Any]:
    """Evaluate a model object without exporting it (e.g. from the training loop, on one process).

    The model is evaluated where it lies (`settings.device` is not used) and left in the
    train/eval mode it came in.
    """
    from lm_eval.models.huggingface import HFLM

    max_length = context_length(model.config.to_dict(), settings.max_length)
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, max_length=max_length, batch_size=settings.batch_size)
        return _evaluate(lm, None, settings, max_length, source=type(model).__name__)
    finally:
        model.train(was_training)


def markdown_table(results: dict[str, Any]) -> str:
    from lm_eval.utils import make_table

    table = make_table(results)
    if results.get("groups"):
        table += "\n" + make_table(results, "groups")
    return table


def write_results(results: dict[str, Any], output: Path) -> tuple[Path, Path]:
    """Write `output` (JSON) and the markdown table beside it; returns both paths."""
    from lm_eval.utils import handle_non_serializable

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=handle_non_serializable) + "\n", encoding="utf-8")
    table_path = output.with_suffix(".md")
    table_path.write_text(markdown_table(results), encoding="utf-8")
    return output, table_path


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder (config.json, weights, tokenizer)")
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0, ...")
    parser.add_argument(
        "--max-length", type=int, default=None, help="context in tokens (default: the model's max_position_embeddings)"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="results JSON (default: out/zero_shot/<model folder name>.json)"
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="send lm-eval's step-by-step log here; the terminal keeps this tool's messages, "
        "errors, the progress bars and the table",
    )
    return parser.parse_args(argv)


class _OwnOrError(logging.Filter):
    """This tool's records and anyone's errors: lm-eval logs each step at INFO and its routine notices
    (such as overriding num_fewshot for a 0-shot run) as warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name in (logger.name, task_files.logger.name) or record.levelno >= logging.ERROR


def configure_logging(log_file: Path | None) -> list[logging.Handler]:
    """Everything on the terminal; or, with a log file, everything in the file and the essentials on the
    terminal. Returns the handlers it added to the root logger."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    terminal = logging.StreamHandler()
    terminal.setFormatter(logging.Formatter(fmt))
    handlers: list[logging.Handler] = [terminal]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s " + fmt))
        terminal.addFilter(_OwnOrError())
        handlers.append(to_file)
        # datasets' "Generating validation split" and transformers' "Loading weights" bars say nothing here.
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    return handlers


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.offline:
        # Read by huggingface_hub / datasets at import, which has not happened yet in this process.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    configure_logging(args.log_file)
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
        results = evaluate_folder(args.model, settings)
    except (PrepareError, ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 2
    except ConnectionError as err:  # the stock tasks' data lives on the Hub
        logger.error("%s; without the Hub, add --offline (local task copies, nt-llm prepare-tasks)", err)
        return 2
    if not results:  # a non-main process of `accelerate launch`: rank 0 writes
        return 0
    output = args.output or Path("out") / "zero_shot" / f"{args.model.resolve().name}.json"
    json_path, table_path = write_results(results, output)
    sys.stdout.write(markdown_table(results) + "\n")
    logger.info("results: %s, table: %s", json_path, table_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
