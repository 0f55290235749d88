"""Hugging Face datasets as sources (`source: hub`, the entries of `source: mix`, and C4 as a preset of them).

A source is what `datasets.load_dataset(path, name, revision=...)` opens: a Hub dataset id, or a local folder laid
out like a Hub dataset repo (data files split by their names or by the `configs` of a README). A folder written by
`Dataset.save_to_disk` / `DatasetDict.save_to_disk` is opened with `datasets.load_from_disk` instead. Streaming
datasets keep their files as shards; Arrow datasets (non-streaming loads, save_to_disk folders) are cut into up to
`ARROW_SHARDS` contiguous shards, so that ranks split them and epochs permute them as they do files.

Validation is the dataset's validation split or, where it has none (or a hold-out size is set), the first records
of the train split in their natural order, which the train stream then skips. Taking the *first* records, not a
hashed sample, costs one read of those records at start-up however large the split is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import datasets

from .config import DEFAULT_HOLDOUT_DOCUMENTS, DataConfig, HubSource
from .sources import SPLITS, Holdout, OpenedSplit

logger = logging.getLogger(__name__)

# Shards of an Arrow dataset (contiguous row ranges). As many as C4 en has train files: enough for any world size
# to split shards, and a per-epoch permutation of them, with the shuffle buffer, mixes documents well.
ARROW_SHARDS = 1024
# save_to_disk writes one of these into the folder: a DatasetDict, or a single Dataset.
SAVED_DICT_FILE = "dataset_dict.json"
SAVED_DATASET_FILE = "state.json"


@dataclass(frozen=True)
class Settings:
    """How error messages name a source's fields: `DataConfig.hub.text_field`, `DataConfig.mix.web.weight`, or
    for the C4 preset the DataConfig fields it is made of (`DataConfig.c4_path`)."""

    prefix: str
    renamed: dict[str, str] = field(default_factory=dict)

    def __call__(self, key: str) -> str:
        return self.renamed.get(key, f"{self.prefix}.{key}")


def c4_source(cfg: DataConfig) -> tuple[HubSource, Settings]:
    """`source: c4` as a Hub source: the Hub's json.gz files streamed (a rank opens only the shards it reads),
    the dataset's own validation split, `DataConfig.text_field`."""
    source = HubSource(path=cfg.c4_path, name=cfg.c4_name, validation_split="validation", text_field=cfg.text_field)
    renamed = {"path": "DataConfig.c4_path", "name": "DataConfig.c4_name", "text_field": "DataConfig.text_field"}
    return source, Settings("DataConfig (source: c4)", renamed)


def open_hub_split(source: HubSource, split: str, setting: Settings) -> OpenedSplit:
    """Open the train or validation split of `source` for a `DocumentStream`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    repo = _open_repo(source, setting)
    held_out = _validation_is_held_out(source, repo, setting)
    if split == "validation" and not held_out:
        name = source.validation_split or "validation"
        dataset, num_rows = repo.load(name, setting("validation_split"))
        holdout = None
    else:
        dataset, num_rows = repo.load(source.train_split, setting("train_split"))
        holdout = None
        if held_out:
            count = _holdout_size(source, dataset, num_rows, setting)
            leading, whole = leading_records(
                dataset, count, _holdout_setting(source, setting), repr(source.train_split)
            )
            holdout = Holdout(leading, whole, keep=split == "validation")
    field_setting = setting("token_field" if source.token_field else "text_field")
    _check_column(dataset, source, field_setting, split)
    return OpenedSplit(dataset, source.field, source.token_field is not None, holdout, field_setting)


class _Repo:
    """A dataset's splits: their names, and one of them opened as an IterableDataset (with its row count when
    it is known without reading it)."""

    def __init__(self, source: HubSource, setting: Settings, local: Path | None) -> None:
        self.source = source
        self.setting = setting
        self.local = local
        self._split_names: list[str] | None = None

    @property
    def where(self) -> str:
        config = f" (config {self.source.name!r})" if self.source.name else ""
        return f"{self.setting('path')}={self.source.path!r}{config}"

    def split_names(self) -> list[str]:
        if self._split_names is None:
            kwargs = _set(revision=self.source.revision)
            try:
                names = datasets.get_dataset_split_names(self.source.path, self.source.name, **kwargs)
            except Exception as err:  # not found, offline, unknown config: re-raised naming the setting
                raise _reraised(err, f"{self.where}: cannot list its splits: {err}") from err
            self._split_names = list(names)
        return self._split_names

    def load(self, split: str, split_setting: str) -> tuple[datasets.IterableDataset, int | None]:
        if self.local is not None:
            names = self.split_names()
            if split not in names:
                raise ValueError(f"{split_setting}: {self.where} has no split {split!r}; its splits are {names}")
        src = self.source
        kwargs = _set(revision=src.revision, cache_dir=src.cache_dir)
        try:
            dataset = datasets.load_dataset(src.path, src.name, split=split, streaming=src.streaming, **kwargs)
        except Exception as err:  # as above; the split's setting too, since a Hub id's splits are not pre-checked
            raise _reraised(err, f"{self.where}, split {split!r} ({split_setting}): {err}") from err
        if isinstance(dataset, datasets.Dataset):
            return _arrow_shards(dataset, f"{self.where}, split {split!r}"), len(dataset)
        return dataset, None


class _SavedRepo(_Repo):
    """A folder written by save_to_disk: a DatasetDict's splits, or one Dataset, which is the train split."""

    def __init__(self, source: HubSource, setting: Settings, local: Path) -> None:
        super().__init__(source, setting, local)
        for key in ("name", "revision"):
            if getattr(source, key) is not None:
                raise ValueError(
                    f"{setting(key)}: {source.path} was written by save_to_disk, which keeps no {key}s; leave it null"
                )
        saved = datasets.load_from_disk(str(local))
        self.splits = dict(saved) if isinstance(saved, datasets.DatasetDict) else {source.train_split: saved}

    def split_names(self) -> list[str]:
        return list(self.splits)

    def load(self, split: str, split_setting: str) -> tuple[datasets.IterableDataset, int | None]:
        if split not in self.splits:
            raise ValueError(
                f"{split_setting}: {self.where} has no split {split!r}; its splits are {list(self.splits)}"
            )
        dataset = self.splits[split]
        return _arrow_shards(dataset, f"{self.where}, split {split!r}"), len(dataset)


def _open_repo(source: HubSource, setting: Settings) -> _Repo:
    local = _local_folder(source.path, setting("path"))
    if local is None:
        return _Repo(source, setting, None)
    if (local / SAVED_DICT_FILE).is_file() or (local / SAVED_DATASET_FILE).is_file():
        return _SavedRepo(source, setting, local)
    if source.revision is not None:
        raise ValueError(f"{setting('revision')}: {source.path} is a local folder; revisions are of Hub datasets")
    if source.name is not None:
        names = datasets.get_dataset_config_names(str(local))
        if source.name not in names:
            raise ValueError(f"{setting('name')}: {source.path} has no config {source.name!r}; its configs are {names}")
    return _Repo(source, setting, local)


def _local_folder(path: str, path_setting: str) -> Path | None:
    """The folder `path` names, or None for a Hub id. A path that can only be local (absolute, ./, ~, or more
    than one '/') must exist: else load_dataset would take it for a Hub id and fail on the network instead."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ValueError(
            f"{path_setting}: {path} is a file; give the folder that holds the dataset's files, or read files "
            "with source: files"
        )
    if path.startswith(("/", ".", "~")) or path.count("/") > 1 or "\\" in path:
        raise FileNotFoundError(
            f"{path_setting}: no folder {path} (relative to {Path.cwd()}); a Hub dataset id looks like 'owner/name'"
        )
    return None


def _validation_is_held_out(source: HubSource, repo: _Repo, setting: Settings) -> bool:
    if source.holdout_set:
        return True
    if source.validation_split is not None:
        return False
    names = repo.split_names()
    if "validation" in names:
        return False
    logger.info(
        "%s has no validation split (its splits are %s): validation is held out of %r (%s)",
        repo.where,
        names,
        source.train_split,
        f"{setting('holdout_documents')}, default {DEFAULT_HOLDOUT_DOCUMENTS}",
    )
    return True


def _holdout_setting(source: HubSource, setting: Settings) -> str:
    if source.holdout_fraction is not None:
        return setting("holdout_fraction")
    if source.holdout_documents is not None:
        return setting("holdout_documents")
    return (
        f"{setting('holdout_documents')} (default {DEFAULT_HOLDOUT_DOCUMENTS}, as the dataset has no validation split)"
    )


def _holdout_size(source: HubSource, dataset: datasets.IterableDataset, num_rows: int | None, setting: Settings) -> int:
    """Records to hold out: `holdout_documents`, or `holdout_fraction` of the split (at least one)."""
    if source.holdout_fraction is None:
        return source.holdout_documents or DEFAULT_HOLDOUT_DOCUMENTS
    if num_rows is None:
        # A streamed split's size is only known by reading it; Arrow datasets know theirs.
        logger.warning(
            "%s: counting the records of %r to hold out a fraction reads the whole split once; "
            "set holdout_documents instead to skip that",
            setting("holdout_fraction"),
            source.train_split,
        )
        num_rows = sum(1 for _ in dataset)
    return max(1, int(num_rows * source.holdout_fraction))


def leading_records(
    dataset: datasets.IterableDataset, count: int, holdout_setting: str, split: str
) -> tuple[dict[int, int], tuple[int, ...]]:
    """({shard: records}, shards taken whole) for the first `count` records of `dataset` in shard order, reading
    only those (and one more, to make sure something is left to train on)."""
    leading: dict[int, int] = {}
    whole: list[int] = []
    taken = 0
    for shard in range(dataset.num_shards):
        records = iter(dataset.shard(num_shards=dataset.num_shards, index=shard))
        if taken == count:
            if next(records, None) is not None:
                return leading, tuple(whole)
            whole.append(shard)  # empty: nothing in it to train on either
            continue
        need = count - taken
        read = sum(1 for _ in islice(records, need + 1))
        if min(read, need):
            leading[shard] = min(read, need)
        taken += min(read, need)
        if read > need:
            return leading, tuple(whole)
        whole.append(shard)
    raise ValueError(
        f"{holdout_setting}: holding out {count} records of split {split} leaves nothing to train on "
        f"(it has {taken}); hold out fewer, or name a validation split"
    )


def _check_column(dataset: datasets.IterableDataset, source: HubSource, field_setting: str, split: str) -> None:
    """The column exists and holds what the source says (text or token ids), where the schema is known before
    reading (parquet, Arrow, json's inferred features); otherwise the stream checks its first record."""
    features = dataset.features
    if features is None:
        return
    if source.field not in features:
        raise KeyError(
            f"{field_setting}={source.field!r} is not a column of {source.path} ({split}); its columns are "
            f"{sorted(features)}"
        )
    feature = features[source.field]
    is_text = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    if source.token_field is not None and is_text:
        raise ValueError(f"{field_setting}={source.field!r} holds text, not token ids: name it in text_field instead")
    if source.token_field is None and not is_text:
        raise ValueError(
            f"{field_setting}={source.field!r} holds {feature}, not text; a column of token ids goes in token_field"
        )


def _arrow_shards(dataset: datasets.Dataset, what: str) -> datasets.IterableDataset:
    if len(dataset) == 0:
        raise ValueError(f"{what} is empty; there is nothing to read")
    return dataset.to_iterable_dataset(num_shards=min(len(dataset), ARROW_SHARDS))


def _set(**kwargs: object) -> dict[str, object]:
    """The keyword arguments that are set: load_dataset's defaults stand for the others."""
    return {key: value for key, value in kwargs.items() if value is not None}


def _reraised(err: Exception, message: str) -> Exception:
    """`message` as an error of the kind callers catch for bad data input: not found, I/O, or a bad value."""
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(message)
    if isinstance(err, OSError):
        return OSError(message)
    return ValueError(message)


__all__ = ["ARROW_SHARDS", "Settings", "c4_source", "leading_records", "open_hub_split"]
