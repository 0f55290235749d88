"""DataConfig: everything that decides which tokens a run sees, validated on construction."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCES = ("embedded", "c4", "files", "hub", "mix")
MODES = ("pack", "pad")
FILE_FORMATS = ("json", "parquet", "arrow", "text")
TEXT_SAMPLE_BY = ("line", "paragraph", "document")

# The prepare command writes here (relative to the working directory, i.e. the repo root for `make data`).
DEFAULT_DATA_DIR = "data"
EMBEDDED_SUBDIR = "embedded"
# `tokenizer: embedded` resolves to the folder the prepare command saves next to the corpus (the 32k LLaMA-format
# model, for the paper's sizes); `tokenizer: embedded-4k` to the 4,096-piece model it trains on the training split,
# so that at CPU sizes the decoder blocks, not the embedding and LM heads, hold most of the weights.
EMBEDDED_TOKENIZER = "embedded"
EMBEDDED_SMALL_TOKENIZER = "embedded-4k"
# Without a validation split and without a hold-out size, this many records from the start of train are held out.
DEFAULT_HOLDOUT_DOCUMENTS = 1000


@dataclass
class HubSource:
    """One Hugging Face dataset, opened as `datasets.load_dataset(path, name, revision=...)` opens it.

    `path` is a Hub dataset id or a local folder laid out like a Hub dataset repo (jsonl/json/parquet/arrow/txt
    files, split by file names or by the `configs` of a README), or a folder written by `Dataset.save_to_disk` /
    `DatasetDict.save_to_disk`. Validation comes from `validation_split`, or, when the dataset has no such split
    or a hold-out size is set, from the first records of the train split, which training then skips.
    """

    path: str = ""
    name: str | None = None  # the dataset's config (load_dataset's `name`), e.g. "en" for allenai/c4
    revision: str | None = None  # a branch, tag or commit of a Hub dataset
    train_split: str = "train"
    # None: the split "validation" where the dataset has one, else a hold-out of train.
    validation_split: str | None = None
    # The hold-out: the first N records of train (natural order: first file first), or that fraction of them.
    holdout_documents: int | None = None
    holdout_fraction: float | None = None
    text_field: str = "text"
    # A column of token ids (of `data.tokenizer`'s vocabulary): documents are not tokenized, text_field is unused.
    token_field: str | None = None
    # Read the files as they stream (no download of the whole split); False prepares Arrow files in the
    # datasets cache first (`cache_dir`, default ~/.cache/huggingface/datasets). save_to_disk folders are Arrow.
    streaming: bool = True
    cache_dir: str | None = None

    @property
    def field(self) -> str:
        """The column documents are read from."""
        return self.token_field or self.text_field

    @property
    def holdout_set(self) -> bool:
        return self.holdout_documents is not None or self.holdout_fraction is not None


@dataclass
class MixSource(HubSource):
    """A `HubSource` in a weighted mix: training draws each document from source i with probability
    weight_i / sum(weights), so weights need not sum to 1."""

    weight: float = 1.0


@dataclass
class DataConfig:
    """Where documents come from, how they become [B, T] batches, and the validation budget.

    `batch_size` is per device (per rank); the global batch is batch_size * world_size.
    """

    source: str = "embedded"
    data_dir: str = DEFAULT_DATA_DIR
    # source == "files": glob patterns per split; the format follows the extension unless `file_format` is set.
    train_files: list[str] = field(default_factory=list)
    validation_files: list[str] = field(default_factory=list)
    file_format: str | None = None
    text_field: str = "text"
    # Plain-text files only: one document per line, per blank-line-separated paragraph, or per file.
    text_sample_by: str = "paragraph"
    # source == "c4": the paper's data, a preset of source "hub" (streamed, its "validation" split, `text_field`).
    c4_path: str = "allenai/c4"
    c4_name: str = "en"
    # source == "hub": one Hugging Face dataset ({path, name, revision, train_split, ...}: HubSource's fields).
    hub: HubSource | None = None
    # source == "mix": named Hugging Face datasets with weights ({name: {path, ..., weight}}: MixSource's fields).
    mix: dict[str, MixSource] | None = None
    tokenizer: str = EMBEDDED_TOKENIZER
    seq_len: int = 256
    mode: str = "pack"
    batch_size: int = 8
    shuffle_buffer: int = 10_000
    # None: the run's seed (the training recipe fills it from run.seed); a DataConfig used on its own reads 0.
    seed: int | None = None
    validation_tokens: int = 100_000
    validation_batch_size: int | None = None
    # Documents tokenized per tokenizer call: the fast tokenizer parallelises within a call.
    tokenize_batch: int = 64
    # Training batches made ahead in a background thread (0: none), so a fast GPU step never waits on them.
    prefetch: int = 2

    def __post_init__(self) -> None:
        _one_of("source", self.source, SOURCES)
        _one_of("mode", self.mode, MODES)
        _one_of("text_sample_by", self.text_sample_by, TEXT_SAMPLE_BY)
        if self.file_format is not None:
            _one_of("file_format", self.file_format, FILE_FORMATS)
        if isinstance(self.train_files, str):
            self.train_files = [self.train_files]
        if isinstance(self.validation_files, str):
            self.validation_files = [self.validation_files]
        if self.source == "files" and not self.train_files:
            raise ValueError("DataConfig.train_files: source='files' needs at least one glob pattern")
        if self.source == "files" and not self.validation_files:
            raise ValueError("DataConfig.validation_files: source='files' needs at least one glob pattern")
        if not self.text_field:
            raise ValueError("DataConfig.text_field must be a non-empty column name")
        self.hub = _hub_source(self.source, self.hub)
        self.mix = _mix_sources(self.source, self.mix)
        if not self.tokenizer:
            raise ValueError("DataConfig.tokenizer must name 'embedded', a Hub id or a local folder")
        _positive("seq_len", self.seq_len, minimum=2)
        _positive("batch_size", self.batch_size)
        _positive("validation_tokens", self.validation_tokens)
        _positive("tokenize_batch", self.tokenize_batch)
        if not isinstance(self.prefetch, int) or self.prefetch < 0:
            raise ValueError(f"DataConfig.prefetch must be an integer >= 0 (0 disables it), got {self.prefetch!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"DataConfig.seed must be an integer or None (the run's seed), got {self.seed!r}")
        if self.validation_batch_size is not None:
            _positive("validation_batch_size", self.validation_batch_size)
        if self.shuffle_buffer < 0:
            raise ValueError(
                f"DataConfig.shuffle_buffer must be >= 0 (0 disables shuffling), got {self.shuffle_buffer}"
            )

    @property
    def embedded_dir(self) -> Path:
        return Path(self.data_dir) / EMBEDDED_SUBDIR

    @property
    def stream_seed(self) -> int:
        """The seed the data stream uses: `seed`, or 0 when it is left to a run that did not fill it."""
        return 0 if self.seed is None else self.seed

    @property
    def eval_batch_size(self) -> int:
        return self.validation_batch_size or self.batch_size


def _hub_source(source: str, value: HubSource | dict[str, Any] | None) -> HubSource | None:
    if source != "hub":
        if value is not None:
            raise ValueError(
                f"DataConfig.hub is set but DataConfig.source is {source!r}: set source: hub, or hub: null"
            )
        return None
    if value is None:
        raise ValueError("DataConfig.hub: source='hub' needs hub: {path: <Hub dataset id or folder>, ...}")
    return _checked_source(HubSource, value, "DataConfig.hub")


def _mix_sources(source: str, value: dict[str, Any] | None) -> dict[str, MixSource] | None:
    if source != "mix":
        if value is not None:
            raise ValueError(
                f"DataConfig.mix is set but DataConfig.source is {source!r}: set source: mix, or mix: null"
            )
        return None
    if not isinstance(value, dict) or not value:
        raise ValueError(
            "DataConfig.mix: source='mix' needs a mapping of named sources with weights, e.g. {web: {path: "
            f"allenai/c4, name: en, weight: 0.8}}, code: {{path: data/code, weight: 0.2}}}}; got {value!r}"
        )
    mix = {}
    for key, entry in value.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"DataConfig.mix: source names must be non-empty strings without '/', got {key!r}")
        mix[key] = _checked_source(MixSource, entry, f"DataConfig.mix.{key}")
    return mix


def _checked_source(cls: type[HubSource], value: HubSource | dict[str, Any], where: str) -> HubSource:
    """`value` (a mapping from a recipe, or a HubSource) as a validated `cls`; errors name `where`.field."""
    if isinstance(value, HubSource):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping of {cls.__name__} fields, got {value!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {[f'{where}.{k}' for k in unknown]}; {where} keys are {known}")
    hints = typing.get_type_hints(cls)
    src = cls(**{key: _typed(f"{where}.{key}", v, hints[key]) for key, v in value.items()})
    for key in ("path", "train_split", "text_field"):
        if not getattr(src, key):
            raise ValueError(f"{where}.{key} must be non-empty")
    for key in ("name", "revision", "validation_split", "token_field", "cache_dir"):
        if getattr(src, key) == "":
            raise ValueError(f"{where}.{key} must be non-empty or null")
    if src.validation_split == src.train_split:
        raise ValueError(
            f"{where}.validation_split must differ from train_split ({src.train_split!r}): it would "
            "validate on training documents; leave it null to hold out part of train"
        )
    if src.holdout_documents is not None and src.holdout_fraction is not None:
        raise ValueError(f"{where}.holdout_documents and {where}.holdout_fraction: set one of them, not both")
    if src.holdout_set and src.validation_split is not None:
        raise ValueError(
            f"{where}.validation_split ({src.validation_split!r}) and a hold-out of train "
            f"(holdout_documents / holdout_fraction) are both set: validation comes from one of them"
        )
    if src.holdout_documents is not None and src.holdout_documents < 1:
        raise ValueError(f"{where}.holdout_documents must be an integer >= 1, got {src.holdout_documents}")
    if src.holdout_fraction is not None and not 0 < src.holdout_fraction < 1:
        raise ValueError(f"{where}.holdout_fraction must be in (0, 1), got {src.holdout_fraction}")
    if isinstance(src, MixSource) and not src.weight > 0:
        raise ValueError(f"{where}.weight must be > 0 (remove the source to leave it out), got {src.weight}")
    return src


def _typed(key: str, value: Any, hint: Any) -> Any:
    """A recipe value for a field of a source: YAML gives numbers and booleans, as the recipe loader reads nested
    mappings; a number where text is expected (`name: 2024`) is taken as its text."""
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    kind = next(a for a in args if a is not type(None)) if args else hint
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind is str and isinstance(value, str):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and not isinstance(value, bool):
        if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer()):
            return int(value)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    expected = {str: "text", bool: "true or false", int: "an integer", float: "a finite number"}[kind]
    null = " or null" if type(None) in args else ""
    raise ValueError(f"{key}: expected {expected}{null}, got {value!r}")


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"DataConfig.{name} must be one of {list(allowed)}, got {value!r}")


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"DataConfig.{name} must be an integer >= {minimum}, got {value!r}")
