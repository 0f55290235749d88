"""A tiny SentencePiece tokenizer and small local corpora for the data, training and evaluation tests."""

from __future__ import annotations

import gzip
import json
import random
import tempfile
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from nt_llm.data import DataConfig, build_document_stream
from nt_llm.data.tokenizer import ensure_special_tokens, sentencepiece_to_hf, train_sentencepiece

WORDS = (
    "the market said people government city world year report price news time team game film music "
    "science history river mountain company school player album court minister election season"
).split()


def make_docs(n: int, seed: int = 0, start: int = 0, max_words: int = 60) -> list[str]:
    """n distinct documents of 2..max_words words; each names its index so tests can identify it."""
    rng = random.Random(seed)
    return [
        f"Doc {start + i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, max_words))) + "."
        for i in range(n)
    ]


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    lines = "".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs))
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")
    return path


@lru_cache(maxsize=1)
def tiny_tokenizer_dir() -> str:
    """A 400-piece LLaMA-format tokenizer trained on the fixture vocabulary (well under a second)."""
    folder = Path(tempfile.mkdtemp(prefix="nt_llm_tiny_tok-"))
    model = train_sentencepiece(make_docs(400, seed=123), folder / "spm", vocab_size=400)
    sentencepiece_to_hf(model, folder / "hf")
    return str(folder / "hf")


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    return ensure_special_tokens(AutoTokenizer.from_pretrained(tiny_tokenizer_dir()))


def corpus(tmp_path: Path, n_files: int, docs_per_file: int, n_val: int = 20) -> tuple[list[list[str]], list[str]]:
    """train-*.jsonl shards and a validation.jsonl under tmp_path; returns their documents."""
    train = [make_docs(docs_per_file, seed=f, start=f * docs_per_file) for f in range(n_files)]
    for f, docs in enumerate(train):
        write_jsonl(tmp_path / f"train-{f:02d}.jsonl", docs)
    val = make_docs(n_val, seed=999, start=100_000)
    write_jsonl(tmp_path / "validation.jsonl", val)
    return train, val


def write_records(path: Path, records: list[dict[str, object]]) -> Path:
    """Records as JSON lines (.jsonl) or a parquet file (.parquet), by the file's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def hub_folder(
    root: Path, n_files: int, docs_per_file: int, n_val: int | None = 20, fmt: str = "jsonl", start: int = 0
) -> tuple[list[list[str]], list[str]]:
    """A folder laid out like a Hub dataset repo: data/train-0000i-of-0000n.<fmt> shards and, unless n_val is None,
    one validation shard; records {"text", "id"}. Returns the documents of each train shard and of validation."""
    train = [make_docs(docs_per_file, seed=f, start=start + f * docs_per_file) for f in range(n_files)]
    for f, docs in enumerate(train):
        records = [{"text": d, "id": start + f * docs_per_file + i} for i, d in enumerate(docs)]
        write_records(root / "data" / f"train-{f:05d}-of-{n_files:05d}.{fmt}", records)
    val = make_docs(n_val or 0, seed=999, start=start + 100_000)
    if n_val is not None:
        write_records(
            root / "data" / f"validation-00000-of-00001.{fmt}", [{"text": d, "id": i} for i, d in enumerate(val)]
        )
    return train, val


def data_settings(**overrides: object) -> dict[str, object]:
    """The DataConfig fields the tests share (tiny tokenizer, 16-token rows), with `overrides`."""
    settings: dict[str, object] = dict(
        tokenizer=tiny_tokenizer_dir(),
        seq_len=16,
        batch_size=4,
        shuffle_buffer=8,
        seed=0,
        validation_tokens=200,
        tokenize_batch=8,
    )
    settings.update(overrides)
    return settings


def hub_config(hub: dict[str, object], **overrides: object) -> DataConfig:
    return DataConfig(**data_settings(source="hub", hub=hub, **overrides))


def mix_config(mix: dict[str, dict[str, object]], **overrides: object) -> DataConfig:
    return DataConfig(**data_settings(source="mix", mix=mix, **overrides))


def files_config(tmp_path: Path, **overrides: object) -> DataConfig:
    files = dict(
        source="files",
        train_files=[str(tmp_path / "train-*.jsonl")],
        validation_files=[str(tmp_path / "validation.jsonl")],
    )
    return DataConfig(**data_settings(**{**files, **overrides}))


def epoch_documents(cfg: DataConfig, rank: int, world_size: int) -> tuple[list[str], bool]:
    """The documents ``rank`` of ``world_size`` reads in one pass over the training stream, and whether the stream
    split whole shards between ranks (else documents)."""
    stream = build_document_stream(cfg, "train", rank, world_size)
    stream.repeat = False
    return list(stream), stream.shard_level
