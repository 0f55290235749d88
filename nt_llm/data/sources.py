"""Document sources as streaming `datasets`, and a rank-sharded, shuffled, resumable document stream.

Every source (local files and the embedded corpus here; Hugging Face datasets and C4 in `hub`) is opened
as a streaming `datasets.IterableDataset`, whose shards are its files. Ranks split the *shards* when there are at
least as many shards as ranks (C4 en has 1024 train and 8 validation files), so a rank only opens the
files it reads; only when there are fewer shards than ranks do ranks stride over the documents of
each shard (small local corpora, where reading a whole file per rank costs nothing).
"""

from __future__ import annotations

import glob
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import datasets

from .config import DataConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation")
# A document: text to tokenize, or the token ids of a pre-tokenized dataset.
Document = str | list[int]
# Undecodable bytes are replaced by U+FFFD while reading; a document that contains one is skipped.
REPLACEMENT_CHAR = "\ufffd"
_EXTENSION_FORMATS = {
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".txt": "text",
    ".text": "text",
}


def infer_file_format(path: str) -> str:
    """Format of a data file from its name (`.gz`/`.bz2`/... compression suffixes are looked through)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst", ".lz4"):
        suffixes.pop()
    if not suffixes or suffixes[-1] not in _EXTENSION_FORMATS:
        raise ValueError(
            f"cannot tell the format of {path!r} from its extension; expected one of "
            f"{sorted(_EXTENSION_FORMATS)} (optionally compressed), or set DataConfig.file_format"
        )
    return _EXTENSION_FORMATS[suffixes[-1]]


def resolve_files(patterns: list[str], what: str) -> list[str]:
    """Expand glob patterns; every pattern must match at least one file."""
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matches:
            raise FileNotFoundError(f"{what}: no file matches {pattern!r}")
        files.extend(m for m in matches if m not in files)
    return files


@dataclass(frozen=True)
class Holdout:
    """Validation held out of a train split: the first records in its natural order (shard 0 first), as
    `leading[shard]` records at the start of each shard, `whole` the shards held out entirely. The validation
    stream reads only those records (keep=True), the train stream skips them (keep=False) and leaves the whole
    shards out of the shards ranks split; both address records by (shard, index), as resume does."""

    leading: dict[int, int]
    whole: tuple[int, ...]
    keep: bool

    def signature(self) -> list[Any]:
        """What a saved stream position depends on (the records held out), for the layout check on resume."""
        return [sorted(self.leading.items()), list(self.whole), self.keep]


@dataclass
class OpenedSplit:
    """One split opened for a `DocumentStream`: the dataset, the column documents come from, and what it holds."""

    dataset: datasets.IterableDataset
    field: str
    tokens: bool = False  # the column holds token ids
    holdout: Holdout | None = None
    setting: str = "DataConfig.text_field"  # the setting that names `field`, for error messages


def open_file_split(cfg: DataConfig, split: str) -> OpenedSplit:
    """Open one split of the embedded corpus or of local files (source "embedded" or "files")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if cfg.source not in ("embedded", "files"):
        raise ValueError(f"open_file_split opens sources 'embedded' and 'files', not {cfg.source!r}")
    if cfg.source == "embedded":
        root = cfg.embedded_dir
        files = sorted(str(p) for p in root.glob(f"{split}-*.jsonl"))
        if not files:
            raise FileNotFoundError(
                f"the embedded corpus has no {split} files in {root}; prepare it with "
                f"`nt-llm prepare-data --out {cfg.data_dir}` (or `make data`)"
            )
        return OpenedSplit(_open_files(files, "json", cfg, f"the embedded corpus ({split})"), "text")
    patterns = cfg.train_files if split == "train" else cfg.validation_files
    files = resolve_files(patterns, f"DataConfig.{split}_files")
    formats = {cfg.file_format or infer_file_format(f) for f in files}
    if len(formats) != 1:
        raise ValueError(f"DataConfig.{split}_files mixes file formats {sorted(formats)}; use one format per split")
    file_format = formats.pop()
    dataset = _open_files(files, file_format, cfg, f"DataConfig.{split}_files")
    return OpenedSplit(dataset, "text" if file_format == "text" else cfg.text_field)


def _open_files(files: list[str], file_format: str, cfg: DataConfig, what: str) -> datasets.IterableDataset:
    if all(Path(f).stat().st_size == 0 for f in files):
        # Else the json builder, which reads a first record to learn the columns, stops with a bare StopIteration.
        verb = "is" if len(files) == 1 else "are all"
        raise ValueError(f"{what}: {_named(files)} {verb} empty (0 bytes); there is nothing to read")
    kwargs: dict[str, Any] = {}
    if file_format == "json":
        # The json builder only decodes (and so only honours encoding_errors) when the encoding is not
        # spelled "utf-8"; "utf_8" is the same codec under another name, turning bad bytes into U+FFFD
        # per document instead of failing the whole file.
        kwargs = {"encoding": "utf_8", "encoding_errors": "replace"}
    elif file_format == "text":
        kwargs = {"encoding_errors": "replace", "sample_by": cfg.text_sample_by}
    return datasets.load_dataset(file_format, data_files=files, split="train", streaming=True, **kwargs)


def _named(files: list[str]) -> str:
    """``a.jsonl`` or ``the 5 files a.jsonl, b.jsonl, c.jsonl, ...``, for error messages."""
    if len(files) == 1:
        return files[0]
    return f"the {len(files)} files " + ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")


@dataclass
class StreamCounters:
    """What the stream has read on this rank (cumulative over epochs)."""

    documents: int = 0
    skipped_undecodable: int = 0
    skipped_empty: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "documents": self.documents,
            "skipped_undecodable": self.skipped_undecodable,
            "skipped_empty": self.skipped_empty,
        }


@dataclass
class _Position:
    epoch: int = 0
    shard_pos: int = 0  # index into this rank's shard order for `epoch`
    record: int = 0  # records already read from that shard (all of them, not only this rank's)
    draining: bool = False  # the epoch's shards are exhausted; the buffer is being emptied
    buffer: list[Document] = field(default_factory=list)


class DocumentStream:
    """Documents of one split for one rank: disjoint from every other rank's, shuffled, resumable.

    Shuffling is two-level, as for any sharded stream: the shard order is permuted per epoch with the
    same seed on every rank, then documents pass through a buffer of `buffer_size` texts from which a
    random one is emitted. `state_dict()` holds the epoch, shard and record position, the buffer and
    the RNG, so a stream rebuilt with `load_state_dict()` continues with exactly the same documents.
    A document is the text of `text_field`, or with `tokens` the list of token ids in that column.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        text_field: str,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        buffer_size: int = 0,
        repeat: bool = True,
        name: str = "source",
        tokens: bool = False,
        holdout: Holdout | None = None,
        setting: str = "DataConfig.text_field",
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.dataset = dataset
        self.text_field = text_field
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.buffer_size = buffer_size
        self.repeat = repeat
        self.name = name
        self.tokens = tokens
        self.holdout = holdout
        self.setting = setting
        self.num_shards = dataset.num_shards
        self._shards = self._readable_shards()
        self.counters = StreamCounters()
        self._pos = _Position()
        # String seeds are hashed with SHA-512 by `random`, so every process derives the same stream.
        self._rng = random.Random(f"buffer:{seed}:{rank}:{world_size}")
        self._field_checked = False

    def _readable_shards(self) -> list[int]:
        """The shards that hold this stream's records: all of them, less those a hold-out takes (or only those)."""
        shards = list(range(self.num_shards))
        if self.holdout is None:
            return shards
        if self.holdout.keep:
            return [s for s in shards if self.holdout.leading.get(s, 0) > 0]
        return [s for s in shards if s not in self.holdout.whole]

    @property
    def shard_level(self) -> bool:
        """True when ranks split files; False when they stride over the documents of every file."""
        return len(self._shards) >= self.world_size

    def shard_order(self, epoch: int) -> list[int]:
        """The shards this rank reads in `epoch`, in order."""
        order = list(self._shards)
        if self.buffer_size > 0:
            random.Random(f"shards:{self.seed}:{epoch}").shuffle(order)
        return order[self.rank :: self.world_size] if self.shard_level else order

    def __iter__(self) -> Iterator[Document]:
        pos = self._pos
        while True:
            read_any = False
            shards = self.shard_order(pos.epoch)
            while not pos.draining and pos.shard_pos < len(shards):
                for doc in self._read_shard(shards[pos.shard_pos], pos.record):
                    pos.record += 1
                    if doc is None:
                        continue
                    read_any = True
                    out = self._through_buffer(doc)
                    if out is not None:
                        self.counters.documents += 1
                        yield out
                pos.shard_pos += 1
                pos.record = 0
            pos.draining = True
            while pos.buffer:
                read_any = True
                out = pos.buffer.pop(self._rng.randrange(len(pos.buffer)))
                self.counters.documents += 1
                yield out
            if not read_any and self.counters.documents == 0:
                raise ValueError(
                    f"{self.name}: no usable documents for rank {self.rank} of {self.world_size} "
                    f"({self.num_shards} shards; skipped so far: {self.counters.as_dict()}); the corpus is empty"
                )
            pos.epoch += 1
            pos.shard_pos = 0
            pos.draining = False
            if not self.repeat:
                return

    def _through_buffer(self, doc: Document) -> Document | None:
        if self.buffer_size == 0:
            return doc
        buffer = self._pos.buffer
        if len(buffer) < self.buffer_size:
            buffer.append(doc)
            return None
        i = self._rng.randrange(len(buffer))
        out, buffer[i] = buffer[i], doc
        return out

    def _read_shard(self, shard: int, start: int) -> Iterator[Document | None]:
        """Documents of one shard from record `start` on; None for records this rank skips or rejects."""
        records = iter(self.dataset.shard(num_shards=self.num_shards, index=shard))
        held = self.holdout.leading.get(shard, 0) if self.holdout is not None else 0
        stop = held if self.holdout is not None and self.holdout.keep else None
        for index, record in enumerate(islice(records, start, stop), start=start):
            if index < held and stop is None:  # held out for validation: the train stream passes over it
                yield None
                continue
            if not self.shard_level and index % self.world_size != self.rank:
                yield None
                continue
            yield self._tokens_of(record, shard) if self.tokens else self._text_of(record, shard)

    def _check_field(self, record: dict[str, Any], shard: int) -> None:
        if not self._field_checked:
            if self.text_field not in record:
                kind = "token field" if self.tokens else "text field"
                raise KeyError(
                    f"{self.name}: {kind} {self.text_field!r} not found in shard {shard}; its columns are "
                    f"{sorted(record)} (set {self.setting})"
                )
            self._field_checked = True

    def _tokens_of(self, record: dict[str, Any], shard: int) -> list[int] | None:
        self._check_field(record, shard)
        ids = record.get(self.text_field)
        if ids is None or isinstance(ids, (str, bytes, dict)) or not hasattr(ids, "__len__"):
            raise ValueError(
                f"{self.name}: {self.setting}={self.text_field!r} must hold lists of token ids, found "
                f"{type(ids).__name__} in shard {shard}"
            )
        if len(ids) == 0:
            self.counters.skipped_empty += 1
            return None
        return ids.tolist() if hasattr(ids, "tolist") else list(ids)

    def _text_of(self, record: dict[str, Any], shard: int) -> str | None:
        self._check_field(record, shard)
        text = record.get(self.text_field)
        if not isinstance(text, str) or not text.strip():
            self.counters.skipped_empty += 1
            return None
        if REPLACEMENT_CHAR in text:
            self.counters.skipped_undecodable += 1
            if self.counters.skipped_undecodable in (1, 10, 100, 1000):
                logger.warning(
                    "%s: skipped %d document(s) with undecodable bytes so far",
                    self.name,
                    self.counters.skipped_undecodable,
                )
            return None
        return text

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {
            "epoch": self._pos.epoch,
            "shard_pos": self._pos.shard_pos,
            "record": self._pos.record,
            "draining": self._pos.draining,
            "buffer": list(self._pos.buffer),
            "rng": [version, list(internal), gauss],
            "counters": self.counters.as_dict(),
            # Checked on load: a position means nothing in a differently sharded stream.
            "layout": self._layout(),
        }

    def _layout(self) -> list[Any]:
        layout: list[Any] = [self.rank, self.world_size, self.num_shards, self.seed, self.buffer_size]
        # Only a held-out split adds to the layout, so positions saved before hold-outs existed still load.
        return layout + [self.holdout.signature()] if self.holdout is not None else layout

    def load_state_dict(self, state: dict[str, Any]) -> None:
        layout = self._layout()
        if _plain(state["layout"]) != _plain(layout):
            raise ValueError(
                f"{self.name}: data state was saved for [rank, world_size, shards, seed, buffer(, hold-out)]="
                f"{list(state['layout'])} but this stream is {layout}; exact resume needs the same layout"
            )
        self._pos = _Position(
            epoch=state["epoch"],
            shard_pos=state["shard_pos"],
            record=state["record"],
            draining=state["draining"],
            buffer=list(state["buffer"]),
        )
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self.counters = StreamCounters(**state["counters"])


def _plain(value: Any) -> Any:
    """Tuples as lists, as a saved state holds them, so that layouts compare by value."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
