"""DataConfig: everything that decides which tokens a run sees, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SOURCES = ("embedded", "c4", "files")
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
    c4_path: str = "allenai/c4"
    c4_name: str = "en"
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


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"DataConfig.{name} must be one of {list(allowed)}, got {value!r}")


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"DataConfig.{name} must be an integer >= {minimum}, got {value!r}")
