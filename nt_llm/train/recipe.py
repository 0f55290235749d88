"""Recipes: a YAML file (plus ``key=value`` overrides) read into typed, validated dataclasses.

A recipe has the sections ``run``, ``model``, ``sparsity`` (optional), ``data``, ``optim``, ``eval``,
``checkpoint`` and ``logging``. ``model`` holds ``size``, ``method``, the training-only keys of ``ModelRecipe``
and, directly, any ``NeuroTrailsConfig`` field (``ensemble_size``, ``head_layers``, ``hidden_size``, ...) as an
override of the size; ``data`` holds ``nt_llm.data.DataConfig`` fields and ``sparsity``
``nt_llm.sparse.SparsityConfig`` fields except ``total_steps``, which is ``optim.max_steps``. Unknown keys anywhere
are errors that name the key. A section may be a path to a YAML file of its own, relative to the recipe
(``data: data/c4_paper.yaml``).

Values are read as users type them: ``1e-3`` is a number (YAML 1.1 would read a string), and every value is
converted to its field's type (``1e3`` for an integer field is 1000, ``true`` for a boolean); a value that does
not convert, or a non-finite number, is an error that names the key, the value and the expected type.
"""

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nt_llm import methods
from nt_llm.data import DataConfig
from nt_llm.modeling.configuration_neurotrails import HEADS_INITS, NeuroTrailsConfig
from nt_llm.modeling.modeling_neurotrails import LOSS_REDUCTIONS
from nt_llm.precision import PRECISIONS
from nt_llm.sparse import SparsityConfig

OPTIMIZER_IMPLEMENTATIONS = ("auto", "fused", "foreach", "for_loop")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The model config's fields a recipe may set (under ``model``), with their types; the tokenizer sets the rest.
FROM_TOKENIZER = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")
CONFIG_FIELDS: dict[str, Any] = {
    f.name: f.type for f in dataclasses.fields(NeuroTrailsConfig) if f.init and f.name not in FROM_TOKENIZER
}


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the offending key."""


@dataclass
class RunRecipe:
    name: str = "run"
    output_dir: str = "runs/run"  # holds recipe.yaml, metrics.jsonl and checkpoints/
    # The initial weights; also the data order (data.seed) and the masks' random streams (sparsity.seed) where the
    # recipe leaves those out, so that seeds of a study differ in all three.
    seed: int = 0
    # Training on the CPU: glibc keeps freed memory for the next step instead of unmapping every block over
    # 32 MiB (nt_llm.host_memory); the process holds its peak host memory until it exits.
    keep_freed_host_memory: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.name), "run.name", "must be non-empty")
        _require(bool(self.output_dir), "run.output_dir", "must be non-empty")


@dataclass
class ModelRecipe:
    """``size`` and ``method``, what only training needs, and ``config``: the ``NeuroTrailsConfig`` fields that
    override the size (``ensemble_size``, ``head_layers``, ``hidden_size``, ...), written flat under ``model``."""

    # A shipped size name (nt_llm/resources/models) or a path to a YAML of LlamaConfig fields; "tiny" when left out,
    # except with init_from, whose config gives the architecture (a size written beside it must match it).
    size: str | None = None
    method: str = "neurotrails"
    # A LlamaForCausalLM folder or Hub id: the backbone and every head start from its weights, its config gives the
    # architecture (nt_llm.train.init_from). Read when a run starts, never when it resumes.
    init_from: str | None = None
    loss_reduction: str = "sum"  # how the heads' losses combine: "sum" (the paper) or "mean"
    loss_chunk_size: int = 0  # tokens' logits at a time in the training loss (0: all, the fastest); none kept
    activation_checkpointing: bool = False
    # torch.compile of the model, in place (nn.Module.compile): parameter names, checkpoints and exports are
    # those of the plain model, so a compiled run resumes eagerly and the other way round.
    compile: bool = False
    compile_mode: str = "default"  # torch.compile's mode
    compile_backend: str = "inductor"  # torch.compile's backend ("aot_eager": traced, no code generation)
    config: dict[str, Any] = field(default_factory=dict)  # NeuroTrailsConfig fields (not a YAML key: flat)

    def __post_init__(self) -> None:
        names = methods.names()
        _require(self.method in names, "model.method", f"must be one of {names}, got {self.method!r}")
        if self.init_from is not None:
            _require(bool(self.init_from.strip()), "model.init_from", "must name a folder or a Hub id, got ''")
        elif self.size is None:
            self.size = "tiny"
        _require(
            self.compile_mode in COMPILE_MODES,
            "model.compile_mode",
            f"must be one of {COMPILE_MODES}, got {self.compile_mode!r}",
        )
        message = f"must be one of {LOSS_REDUCTIONS}, got {self.loss_reduction!r}"
        _require(self.loss_reduction in LOSS_REDUCTIONS, "model.loss_reduction", message)
        _require_int("model.loss_chunk_size", self.loss_chunk_size, 0)
        _check_config_keys(self.config)
        # The config checks these too, but only when the trainer builds it: named here at load time.
        if "ensemble_size" in self.config:
            _require_int("model.ensemble_size", self.config["ensemble_size"], 1)
        if self.config.get("head_layers") is not None:
            _require_int("model.head_layers", self.config["head_layers"], 1)
        if "heads_init" in self.config:
            heads_init = self.config["heads_init"]
            _require(heads_init in HEADS_INITS, "model.heads_init", f"must be one of {HEADS_INITS}, got {heads_init!r}")
        # What the method's shape rules can judge before the size is read (a one-model method given H heads, which
        # would otherwise be dropped silently); the rest, against the size's depth, when the config is built.
        shape = {key: self.config.get(key) for key in ("ensemble_size", "head_layers", "share_embeddings")}
        try:
            methods.get(self.method).check(**shape)
        except methods.ShapeError as err:
            raise RecipeError(f"model.{err}") from err

    def to_dict(self) -> dict[str, Any]:
        """The ``model`` section as written: size, method and init_from, the config fields, then the training-only
        keys."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "config"}
        first = {key: values.pop(key) for key in ("size", "method", "init_from")}
        return {**first, **self.config, **values}


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
    # nt_llm.precision: "auto" (bf16 autocast where the hardware runs bf16 natively, else fp32), "no" (fp32),
    # "bf16" (autocast; weights and optimizer state stay fp32), "bf16-true" (weights and Adam state in bf16, the
    # paper's setup), "fp16" (autocast with a loss scaler).
    precision: str = "auto"
    # The AdamW kernel: "auto" is "fused" where torch has the fused kernel for the device (CUDA and CPU: one
    # pass over each tensor, ~4x the for-loop on this CPU), else "foreach"; "for_loop" is the reference.
    implementation: str = "auto"

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
        _require(
            self.precision in PRECISIONS, "optim.precision", f"must be one of {PRECISIONS}, got {self.precision!r}"
        )
        _require(
            self.implementation in OPTIMIZER_IMPLEMENTATIONS,
            "optim.implementation",
            f"must be one of {OPTIMIZER_IMPLEMENTATIONS}, got {self.implementation!r}",
        )


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
    # accelerate's tracker names ("tensorboard", "wandb", ...; nt_llm[tracking] installs both); "auto": tensorboard
    # when installed, "none": metrics.jsonl only
    trackers: list[str] = field(default_factory=lambda: ["auto"])
    project: str = "nt_llm"  # the trackers' project (wandb's project; TensorBoard: <run.output_dir>/<project>/)
    run_name: str | None = None  # the tracker run's display name (None: run.name)
    tags: list[str] = field(default_factory=list)  # the tracker run's tags (wandb)
    progress_bar: bool = True

    def __post_init__(self) -> None:
        _require_int("logging.every", self.every, 1)
        # One name for a list (`logging.trackers=wandb`, `logging.tags=paper`): the list of that one.
        if isinstance(self.trackers, str):
            self.trackers = [self.trackers]
        if isinstance(self.tags, str):
            self.tags = [self.tags]
        _require(bool(self.project), "logging.project", "must be non-empty")
        _require(self.run_name is None or bool(self.run_name), "logging.run_name", "must be non-empty or null")
        _require(all(self.tags), "logging.tags", f"must be non-empty strings, got {self.tags!r}")


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
        if methods.get(self.model.method).sparse:
            _require(self.sparsity is not None, "sparsity", f"is required for model.method={self.model.method}")
        if self.data.seed is None:
            self.data = dataclasses.replace(self.data, seed=self.run.seed)
        if self.sparsity is not None:
            # Derived, not chosen: the topology schedule spans the whole run (a resume that extends
            # optim.max_steps stretches it).
            seed = self.run.seed if self.sparsity.seed is None else self.sparsity.seed
            self.sparsity = dataclasses.replace(self.sparsity, total_steps=self.optim.max_steps, seed=seed)

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
        """The recipe as a recipe file writes it (derived values left out): ``load_recipe`` reads it back."""
        values = dataclasses.asdict(self)
        values["model"] = self.model.to_dict()
        if values["sparsity"] is not None:
            del values["sparsity"]["total_steps"]
        return _plain(values)


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
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections, got {type(raw).__name__}")
    for name, value in raw.items():
        if isinstance(value, str):  # a section kept in its own file, e.g. `data: data/c4_paper.yaml`
            raw[name] = _load_section_file(path.parent / value, name)
    for override in overrides:
        _apply_override(raw, override)
    return recipe_from_dict(raw)


def apply_overrides(recipe: Recipe, overrides: list[str] | tuple[str, ...]) -> Recipe:
    """``recipe`` with ``section.key=value`` overrides, read and typed as ``load_recipe`` reads a file's.

    The overrides apply to the recipe as written (``Recipe.to_dict``), where the derived seeds are filled in: an
    override of ``run.seed`` moves neither ``data.seed`` nor ``sparsity.seed``.
    """
    raw = recipe.to_dict()
    for override in overrides:
        _apply_override(raw, override)
    return recipe_from_dict(raw)


def load_section(path: str | Path, name: str) -> Any:
    """One recipe section kept in its own YAML file (``recipes/data/c4_paper.yaml``), typed as in a recipe: a
    ``DataConfig`` for ``data``. Without the recipe around it nothing is derived (a data file's ``seed`` stays as
    written)."""
    if name not in SECTIONS:
        raise RecipeError(f"unknown recipe section {name!r}; sections are {list(SECTIONS)}")
    values = _load_section_file(Path(path), name)
    return _build_model(values) if name == "model" else _build_section(name, SECTIONS[name], values)


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise RecipeError(f"unknown recipe section(s) {unknown}; sections are {list(SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name)
        if name == "sparsity" and values is None:
            sections[name] = None
        elif name == "sparsity" and isinstance(values, dict) and "total_steps" in values:
            raise RecipeError("sparsity.total_steps is derived from optim.max_steps: leave it out")
        elif name == "model":
            sections[name] = _build_model(values or {})
        else:
            sections[name] = _build_section(name, cls, values or {})
    return Recipe(**sections)


def resolved_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` as training reads it, every field with its default filled in (``raw`` is left as it is), so that
    recipes written before a field existed compare equal to today's; RecipeError where today's code refuses it."""
    return recipe_from_dict(copy.deepcopy(raw)).to_dict()


def _load_section_file(path: Path, name: str) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"recipe section {name!r} refers to {path}, which does not exist")
    values = _read_yaml(path)
    if not isinstance(values, dict):
        raise RecipeError(f"recipe section {name!r}: {path} must hold a mapping")
    return values


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe YAML 1.1, except that exponent notation without a dot or without an exponent sign
    (``1e-3``, ``1e9``, ``2.5e4``) is a number, as in YAML 1.2 and as users type it (YAML 1.1 reads a string)."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _read_yaml(path: Path) -> Any:
    try:
        return _parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path} is not UTF-8 text: {err}") from err
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML{_yaml_error_text(err)}") from err


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader subclass: safe


def _yaml_error_text(err: yaml.YAMLError) -> str:
    """`` at line L, column C: problem`` (1-based, as editors count) from a PyYAML error."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    return f"{where}: {problem}"


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")


def _build_model(values: dict[str, Any]) -> ModelRecipe:
    """The flat ``model`` section: ModelRecipe's own keys, and the config fields gathered into ``config``."""
    if not isinstance(values, dict):
        raise RecipeError(f"recipe section 'model' must be a mapping, got {values!r}")
    if "config_overrides" in values:
        moved = sorted(values["config_overrides"]) if isinstance(values["config_overrides"], dict) else []
        raise RecipeError(
            f"model.config_overrides is gone: write its keys {moved} directly under model (model.rope_parameters, "
            "model.hidden_size, ...)"
        )
    own = {f.name for f in dataclasses.fields(ModelRecipe)} - {"config"}
    config = {key: value for key, value in values.items() if key not in own}
    _check_config_keys(config)
    typed_config = {key: _typed(f"model.{key}", value, CONFIG_FIELDS[key]) for key, value in config.items()}
    model = _build_section("model", ModelRecipe, {key: value for key, value in values.items() if key in own})
    return dataclasses.replace(model, config=typed_config)


def _check_config_keys(config: dict[str, Any]) -> None:
    taken = sorted(set(config) & set(FROM_TOKENIZER))
    if taken:
        raise RecipeError(f"{[f'model.{k}' for k in taken]} come from the tokenizer (data.tokenizer): leave them out")
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        own = sorted({f.name for f in dataclasses.fields(ModelRecipe)} - {"config"})
        raise RecipeError(
            f"unknown key(s) {[f'model.{k}' for k in unknown]}; model keys are {own} and the NeuroTrailsConfig "
            f"fields {sorted(CONFIG_FIELDS)}"
        )


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    if not isinstance(values, dict):
        raise RecipeError(f"recipe section {name!r} must be a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(f"unknown key(s) {[f'{name}.{k}' for k in unknown]}; {name} keys are {sorted(known)}")
    hints = typing.get_type_hints(cls)
    typed = {key: _typed(f"{name}.{key}", value, hints[key]) for key, value in values.items()}
    try:
        return cls(**typed)
    except RecipeError:
        raise
    except (TypeError, ValueError) as err:
        raise RecipeError(f"recipe section {name!r}: {err}") from err


@dataclass(frozen=True)
class _Override:
    """A value from the command line, kept as typed until its field's type is known: a string field takes the
    text itself (``run.name=2024``, ``checkpoint.hub_revision=yes``), any other field its YAML reading."""

    text: str

    def parsed(self) -> Any:
        return _parse_yaml(self.text) if self.text.strip() else None


def parse_override(override: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> the key's parts and the value, kept as text until its field's type is known; a
    RecipeError naming the override when it has no ``=``, no known section, or a value that is not YAML."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise RecipeError(f"override {override!r} must look like section.key=value")
    if parts[0] not in SECTIONS:
        raise RecipeError(f"override {override!r}: unknown section {parts[0]!r}; sections are {list(SECTIONS)}")
    try:
        _Override(text).parsed()
    except yaml.YAMLError as err:
        raise RecipeError(f"override {override!r}: the value is not valid YAML{_yaml_error_text(err)}") from err
    return parts, _Override(text)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    parts, value = parse_override(override)
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override {override!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _typed(key: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the field type ``hint``; a RecipeError naming the key, value and type if it cannot."""
    members = _union_members(hint)
    optional = type(None) in members
    if isinstance(value, _Override):
        parsed = value.parsed()
        keep_text = str in members and not isinstance(parsed, str) and not (parsed is None and optional)
        value = value.text.strip() if keep_text else parsed
    if value is None and optional:
        return None
    kinds = [m for m in members if m is not type(None)]
    if len(kinds) != 1:  # Any, or a union no recipe field has: the dataclass judges the plain value
        return _untyped(value)
    kind = kinds[0]
    if kind in _SCALARS:
        return _SCALARS[kind](key, value, optional)
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        return _typed_sequence(key, value, origin, typing.get_args(kind))
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, "a mapping", optional)
        return {k: _untyped(v) for k, v in value.items()}
    return _untyped(value)


def _union_members(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _typed_sequence(key: str, value: Any, origin: type, args: tuple[Any, ...]) -> Any:
    if isinstance(value, str) and str in args:
        return value  # one pattern for a list of patterns: the dataclass wraps it
    if not isinstance(value, (list, tuple)):
        raise _type_error(key, value, "a list", False)
    if origin is list or (len(args) == 2 and args[1] is Ellipsis):
        element_types = [args[0]] * len(value)
    else:
        if len(value) != len(args):
            raise _type_error(key, value, f"a list of {len(args)} values", False)
        element_types = list(args)
    return origin(_typed(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, element_types, strict=True)))


def _untyped(value: Any) -> Any:
    """A value for a field of any type (``model.rope_parameters``): overrides read as YAML, recursively."""
    if isinstance(value, _Override):
        return value.parsed()
    if isinstance(value, dict):
        return {k: _untyped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untyped(v) for v in value]
    return value


def _type_error(key: str, value: Any, expected: str, optional: bool) -> RecipeError:
    return RecipeError(f"{key}: expected {expected}{' or null' if optional else ''}, got {value!r}")


def _to_bool(key: str, value: Any, optional: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    raise _type_error(key, value, "true or false", optional)


def _to_int(key: str, value: Any, optional: bool) -> int:
    number = value
    if isinstance(value, str):
        number = _number_from_text(value)
    if isinstance(number, int) and not isinstance(number, bool):
        return number
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        return int(number)  # 1e3 or 1000.0 for a step count
    raise _type_error(key, value, "an integer", optional)


def _to_float(key: str, value: Any, optional: bool) -> float:
    number = _number_from_text(value) if isinstance(value, str) else value
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        if not math.isfinite(number):
            raise _type_error(key, value, "a finite number", optional)
        return float(number)
    raise _type_error(key, value, "a number", optional)


def _to_str(key: str, value: Any, optional: bool) -> str:
    if isinstance(value, str):
        return value
    raise _type_error(key, value, "a string (quote it in YAML)", optional)


def _number_from_text(text: str) -> int | float | str:
    """``"1000"`` -> 1000, ``"1e-3"`` -> 0.001 (a quoted number in a file); anything else stays text."""
    for parse in (int, float):
        try:
            return parse(text.strip())
        except ValueError:
            pass
    return text


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}
_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


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
