"""Recipes: a YAML file (plus ``key=value`` overrides) read into typed, validated dataclasses.

A recipe has the sections ``run``, ``model``, ``sparsity`` (optional), ``data``, ``optim``, ``eval``,
``checkpoint`` and ``logging``. ``data`` holds ``nt_llm.data.DataConfig`` fields and ``sparsity``
``nt_llm.sparse.SparsityConfig`` fields; unknown keys anywhere are errors that name the key. A section may
be a path to a YAML file of its own, relative to the recipe (``data: data/c4_paper.yaml``).
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nt_llm.data import DataConfig
from nt_llm.modeling.sizes import METHODS
from nt_llm.sparse import SparsityConfig

PRECISIONS = ("no", "bf16", "fp16")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the offending key."""


@dataclass
class RunRecipe:
    name: str = "run"
    output_dir: str = "runs/run"  # holds recipe.yaml, metrics.jsonl and checkpoints/
    seed: int = 0

    def __post_init__(self) -> None:
        _require(bool(self.name), "run.name", "must be non-empty")
        _require(bool(self.output_dir), "run.output_dir", "must be non-empty")


@dataclass
class ModelRecipe:
    size: str = "tiny"  # a name in recipes/models or a path to a YAML file of LlamaConfig fields
    method: str = "neurotrails"
    ensemble_size: int = 3
    head_layers: int | None = None  # None: two thirds of the blocks (the paper's split)
    head_execution: str = "batched"
    loss_reduction: str = "sum"
    loss_chunk_size: int = 0  # > 0: the training loss in chunks of this many tokens, no [B, T, vocab] logits
    activation_checkpointing: bool = False
    config_overrides: dict[str, Any] = field(default_factory=dict)  # any other LlamaConfig field

    def __post_init__(self) -> None:
        _require(self.method in METHODS, "model.method", f"must be one of {METHODS}, got {self.method!r}")
        _require_int("model.ensemble_size", self.ensemble_size, 1)
        if self.head_layers is not None:
            _require_int("model.head_layers", self.head_layers, 1)


@dataclass
class OptimRecipe:
    lr: float = 1.5e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_steps: int = 1000  # optimizer steps
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    total_batch_size: int = 8  # sequences per optimizer step, over all processes and accumulation
    grad_clip: float = 1.0  # 0 disables clipping
    precision: str = "no"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        _require(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas",
            f"must be two numbers in [0, 1), got {self.betas}",
        )
        _require_int("optim.max_steps", self.max_steps, 1)
        _require_int("optim.warmup_steps", self.warmup_steps, 0)
        _require(
            self.warmup_steps < self.max_steps,
            "optim.warmup_steps",
            f"({self.warmup_steps}) must be below optim.max_steps ({self.max_steps})",
        )
        _require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _require_int("optim.total_batch_size", self.total_batch_size, 1)
        _require(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {self.grad_clip}")
        _require(self.precision in PRECISIONS, "optim.precision", f"must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass
class EvalRecipe:
    every: int = 200  # optimizer steps between evaluations; the end of training always evaluates
    max_batches: int | None = None  # cap on validation batches per evaluation (None: the whole budget)

    def __post_init__(self) -> None:
        _require_int("eval.every", self.every, 1)
        if self.max_batches is not None:
            _require_int("eval.max_batches", self.max_batches, 1)


@dataclass
class CheckpointRecipe:
    every: int = 500  # optimizer steps between checkpoints; the end of training always saves
    keep_last: int = 2
    push_to_hub: str | None = None  # a Hub repo id: every checkpoint is exported and pushed there
    hub_private: bool = False
    hub_revision: str | None = None  # a branch, created if missing

    def __post_init__(self) -> None:
        _require_int("checkpoint.every", self.every, 1)
        _require_int("checkpoint.keep_last", self.keep_last, 1)
        if self.push_to_hub is not None:
            _require(
                isinstance(self.push_to_hub, str) and self.push_to_hub.count("/") <= 1 and bool(self.push_to_hub),
                "checkpoint.push_to_hub",
                f"must be a Hub repo id like 'user/name', got {self.push_to_hub!r}",
            )


@dataclass
class LoggingRecipe:
    every: int = 10
    trackers: list[str] = field(default_factory=lambda: ["auto"])  # "auto": tensorboard when installed
    progress_bar: bool = True

    def __post_init__(self) -> None:
        _require_int("logging.every", self.every, 1)
        if isinstance(self.trackers, str):
            self.trackers = [self.trackers]


@dataclass
class Recipe:
    run: RunRecipe = field(default_factory=RunRecipe)
    model: ModelRecipe = field(default_factory=ModelRecipe)
    sparsity: SparsityConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimRecipe = field(default_factory=OptimRecipe)
    eval: EvalRecipe = field(default_factory=EvalRecipe)
    checkpoint: CheckpointRecipe = field(default_factory=CheckpointRecipe)
    logging: LoggingRecipe = field(default_factory=LoggingRecipe)

    def __post_init__(self) -> None:
        if self.model.method == "neurotrails":
            _require(self.sparsity is not None, "sparsity", "is required for model.method=neurotrails")
        if self.sparsity is not None and self.sparsity.total_steps != self.optim.max_steps:
            raise RecipeError(
                f"sparsity.total_steps ({self.sparsity.total_steps}) is derived from optim.max_steps "
                f"({self.optim.max_steps}): leave it out"
            )

    def gradient_accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step so that ``total_batch_size`` sequences make one step."""
        per_pass = self.data.batch_size * world_size
        if self.optim.total_batch_size % per_pass:
            raise RecipeError(
                f"optim.total_batch_size ({self.optim.total_batch_size}) must be a multiple of data.batch_size "
                f"({self.data.batch_size}) x processes ({world_size})"
            )
        return self.optim.total_batch_size // per_pass

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


SECTIONS: dict[str, type] = {
    "run": RunRecipe,
    "model": ModelRecipe,
    "sparsity": SparsityConfig,
    "data": DataConfig,
    "optim": OptimRecipe,
    "eval": EvalRecipe,
    "checkpoint": CheckpointRecipe,
    "logging": LoggingRecipe,
}


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file and apply ``section.key=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections, got {type(raw).__name__}")
    for name, value in raw.items():
        if isinstance(value, str):  # a section kept in its own file, e.g. `data: data/c4_paper.yaml`
            raw[name] = _load_section_file(path.parent / value, name)
    for override in overrides:
        _apply_override(raw, override)
    return recipe_from_dict(raw)


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise RecipeError(f"unknown recipe section(s) {unknown}; sections are {list(SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name)
        if name == "sparsity" and values is None:
            sections[name] = None
            continue
        values = dict(values or {})
        if name == "sparsity":
            # Derived, not chosen: the topology schedule spans the whole run.
            values.setdefault("total_steps", (raw.get("optim") or {}).get("max_steps", OptimRecipe.max_steps))
        sections[name] = _build_section(name, cls, values)
    return Recipe(**sections)


def _load_section_file(path: Path, name: str) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"recipe section {name!r} refers to {path}, which does not exist")
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(values, dict):
        raise RecipeError(f"recipe section {name!r}: {path} must hold a mapping")
    return values


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    if not isinstance(values, dict):
        raise RecipeError(f"recipe section {name!r} must be a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(f"unknown key(s) {[f'{name}.{k}' for k in unknown]}; {name} keys are {sorted(known)}")
    try:
        return cls(**values)
    except RecipeError:
        raise
    except (TypeError, ValueError) as err:
        raise RecipeError(f"recipe section {name!r}: {err}") from err


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise RecipeError(f"override {override!r} must look like section.key=value")
    if parts[0] not in SECTIONS:
        raise RecipeError(f"override {override!r}: unknown section {parts[0]!r}; sections are {list(SECTIONS)}")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override {override!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def _plain(value: Any) -> Any:
    """Tuples to lists, so that the resolved recipe is plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise RecipeError(f"{key} {message}")


def _require_int(key: str, value: object, minimum: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _require(ok, key, f"must be an integer >= {minimum}, got {value!r}")
