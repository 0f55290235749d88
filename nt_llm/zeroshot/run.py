"""Zero-shot evaluation of a model folder, a checkpoint or a run (or an in-memory model) with lm-eval, as in the paper.

    nt-llm zero-shot --model MODEL [--tasks boolq,piqa] [--offline] [--limit N] [--device auto]
                     [--output FILE] [--update-card]          # nt_llm.cli.zero_shot

Default tasks are the paper's (boolq, arc_easy, piqa, hellaswag, openbookqa, winogrande), 0-shot;
MMLU runs separately (`--tasks mmlu`). `--offline` switches to the local task copies written by
`nt-llm prepare-tasks` (prepared on first use) and forbids Hub access. Writes the lm-eval results as
JSON and a markdown table next to it, and prints the table. `--update-card` also keeps the scores in
the model folder (an nt_llm export: `nt_llm_zero_shot.json`) and adds them to its model card.
`--device auto` (the default) runs on CUDA when torch sees it, else on the CPU, as `nt-llm evaluate`.

MODEL is opened as export and evaluate open it (nt_llm.trained): a model folder is evaluated as it is; a `step_<N>`
checkpoint, or a run folder (its newest complete checkpoint), is exported to a temporary folder first (DST masks
applied, the context its training seq_len), so the scores are those of the model `nt-llm export` would publish.

The context length is the model's `max_position_embeddings` (what it was trained for, in an nt_llm
export) unless `--max-length` says otherwise; lm-eval's own fallback would be 2048.
"""

from __future__ import annotations

import json
import logging
import tempfile
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nt_llm.zeroshot import tasks as task_files
from nt_llm.zeroshot.tasks import OFFLINE_PREFIX, PAPER_TASKS, PrepareError, prepare, read_manifest

if TYPE_CHECKING:
    from nt_llm.model_card import ZeroShotRecord, ZeroShotTask
    from nt_llm.trained import TrainedModel

logger = logging.getLogger(__name__)

DEFAULT_TASKS_DIR = Path("out") / "nt_tasks"  # relative to the working directory, like every output
RESULTS_KEY = "nt_zero_shot"
AUTO_DEVICE = "auto"


def resolve_device(requested: str) -> str:
    """The torch device to run on: "auto" is CUDA when torch sees it, else the CPU (what `nt-llm evaluate` picks
    without --device); anything else as given, once torch accepts the name, and CUDA only where torch sees it."""
    import torch

    if requested == AUTO_DEVICE:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(f"--device {requested!r} is not a torch device ({err}); try auto, cpu or cuda:0") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: this torch sees no CUDA device; use --device auto or cpu")
    return requested


@dataclass
class ZeroShotSettings:
    """What to evaluate and how; shared by the folder and the in-process paths."""

    tasks: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    offline: bool = False
    tasks_dir: Path = DEFAULT_TASKS_DIR
    limit: int | None = None
    batch_size: int = 8
    device: str = AUTO_DEVICE  # resolved to a torch device name (resolve_device) on construction
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
        self.device = resolve_device(self.device)

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


def evaluate_folder(model: Path | TrainedModel, settings: ZeroShotSettings) -> dict[str, Any]:
    """Evaluate MODEL through lm-eval's `hf` model (custom code trusted). MODEL is what nt_llm.trained opens, or the
    TrainedModel it opened: a model folder is evaluated as it is; a checkpoint (or a run folder's newest one) is first
    exported to a temporary folder, so lm-eval scores exactly what `nt-llm export` would publish (DST masks applied,
    the context its training seq_len), and the folder is removed afterwards."""
    from nt_llm.trained import TrainedModel, open_trained

    trained = model if isinstance(model, TrainedModel) else open_trained(model)
    if trained.checkpoint is None:
        return _evaluate_dir(trained.model_dir.resolve(), trained.config, settings, str(trained.model_dir.resolve()))
    from nt_llm import export

    checkpoint = trained.checkpoint.path.resolve()
    with tempfile.TemporaryDirectory(prefix="nt_zero_shot-") as workdir:
        logger.info("exporting checkpoint %s to a temporary folder for lm-eval (DST masks applied)", checkpoint)
        out = export.export(checkpoint, Path(workdir) / output_name(trained)).out
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        return _evaluate_dir(out, config, settings, str(checkpoint))


def _evaluate_dir(model_dir: Path, config: dict[str, Any], settings: ZeroShotSettings, source: str) -> dict[str, Any]:
    max_length = context_length(config, settings.max_length)
    model_args = {"pretrained": str(model_dir), "trust_remote_code": True, "max_length": max_length}
    return _evaluate("hf", model_args, settings, max_length, source=source)


def output_name(trained: TrainedModel) -> str:
    """A file name for MODEL's results: a folder's name; `<run>_step_<N>` for a checkpoint of a run."""
    if trained.checkpoint is None:
        return trained.model_dir.resolve().name
    run = trained.checkpoint.run
    step = f"step_{trained.checkpoint.step}"
    return f"{run.path.resolve().name}_{step}" if run is not None else step


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


# ---- the record an export keeps (nt_llm.model_card.ZeroShotRecord) ----------------------------------------------


def zero_shot_record(results: dict[str, Any]) -> ZeroShotRecord:
    """What an export's card shows of lm-eval's `results` (as `evaluate_folder` returns them): each top-level task or
    group (a group's subtasks are its detail), its metrics and standard errors, the benchmark's Hub dataset and split,
    and how the run was set up. Raises ValueError when the results hold no task."""
    from nt_llm.model_card import ZeroShotRecord

    settings = results.get(RESULTS_KEY) or {}
    scores = results.get("results") or {}
    subtasks = {name for members in (results.get("group_subtasks") or {}).values() for name in members}
    tasks = tuple(_task_record(name, results) for name in scores if name not in subtasks)
    if not tasks:
        raise ValueError("the lm-eval results hold no task to record")
    return ZeroShotRecord(
        tasks=tasks,
        lm_eval_version=str(results.get("lm_eval_version") or "unknown"),
        num_fewshot=int(settings.get("num_fewshot", 0)),
        limit=settings.get("limit"),
        max_length=int(settings.get("max_length") or results.get("max_length") or 0),
        offline=bool(settings.get("offline", False)),
    )


def _task_record(name: str, results: dict[str, Any]) -> ZeroShotTask:
    from nt_llm.model_card import ZeroShotTask

    metrics: dict[str, float] = {}
    stderr: dict[str, float] = {}
    for key, value in results["results"][name].items():
        metric, _, filter_name = key.partition(",")
        # "acc,none": lm-eval's metric, filter; the card keeps the unfiltered scores, which are numbers ("N/A" not).
        if filter_name != "none" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if metric.endswith("_stderr"):
            stderr[metric.removesuffix("_stderr")] = float(value)
        else:
            metrics[metric] = float(value)
    leaves = _leaf_tasks(name, results.get("group_subtasks") or {})
    samples = sum(int((results.get("n-samples") or {}).get(leaf, {}).get("effective", 0)) for leaf in leaves)
    datasets = {_dataset(leaf, (results.get("configs") or {}).get(leaf) or {}) for leaf in leaves}
    if len(datasets) == 1:
        dataset, config, split = datasets.pop()
    else:  # a group: MMLU's subjects are configs of one dataset; a group over benchmarks names them all
        dataset = " + ".join(sorted({path for path, _, _ in datasets}))
        splits = {split for _, _, split in datasets}
        config, split = None, splits.pop() if len(splits) == 1 else None
    return ZeroShotTask(
        name=name.removeprefix(OFFLINE_PREFIX),
        dataset=dataset,
        dataset_config=config,
        split=split,
        samples=samples,
        metrics=metrics,
        stderr={k: v for k, v in stderr.items() if k in metrics},
    )


def _leaf_tasks(name: str, group_subtasks: dict[str, list[str]]) -> list[str]:
    if name not in group_subtasks:
        return [name]
    return [leaf for member in group_subtasks[name] for leaf in _leaf_tasks(member, group_subtasks)]


def _dataset(task: str, config: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(Hub dataset id, config name, split) a task scores. An offline copy reads JSON files: its dataset is the stock
    task's, from the stock YAML the copy includes; its split is the copy's own (ARC's validation, not test)."""
    split = config.get("test_split") or config.get("validation_split")
    path, name = config.get("dataset_path"), config.get("dataset_name")
    if path == "json" and task.startswith(OFFLINE_PREFIX):
        path, name = _stock_dataset(task)
    return str(path or task), name, split


def _stock_dataset(task: str) -> tuple[str | None, str | None]:
    stock = task.removeprefix(OFFLINE_PREFIX)
    templates = {t.stock_name: t.stock_yaml for t in task_files.TASKS}
    if stock in templates:
        relative = templates[stock]
    elif stock.startswith("mmlu_"):
        relative = f"{task_files.MMLU.stock_dir}/{stock}.yaml"
    else:
        return None, None
    config = _read_task_yaml(task_files.stock_tasks_dir() / relative)
    return config.get("dataset_path"), config.get("dataset_name")


class _TaskYamlLoader(yaml.SafeLoader):
    """A safe loader that reads lm-eval's `!function` tags (which name Python code) as None."""


_TaskYamlLoader.add_multi_constructor("!", lambda _loader, _suffix, _node: None)


def _read_task_yaml(path: Path) -> dict[str, Any]:
    """A stock lm-eval task YAML with its `include`s merged (its own keys win); only its data fields are wanted."""
    if not path.is_file():
        return {}
    config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskYamlLoader) or {}  # noqa: S506 (a SafeLoader)
    include = config.pop("include", None)
    merged: dict[str, Any] = {}
    for item in include if isinstance(include, list) else [include] if include else []:
        merged.update(_read_task_yaml(path.parent / item))
    return {**merged, **config}


def update_card(model_dir: Path, results: dict[str, Any]) -> Path:
    """Keep `results` in the export `model_dir` and add them to its model card; returns the card's path."""
    from nt_llm import export

    try:
        return export.add_zero_shot(model_dir, zero_shot_record(results))
    except export.ExportError as err:
        raise ValueError(str(err)) from err


def write_results(results: dict[str, Any], output: Path) -> tuple[Path, Path]:
    """Write `output` (JSON) and the markdown table beside it; returns both paths."""
    from lm_eval.utils import handle_non_serializable

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=handle_non_serializable) + "\n", encoding="utf-8")
    table_path = output.with_suffix(".md")
    table_path.write_text(markdown_table(results), encoding="utf-8")
    return output, table_path
