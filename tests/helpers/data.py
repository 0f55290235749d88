"""A tiny SentencePiece tokenizer and small local corpora for the data, training and evaluation tests."""

from __future__ import annotations

import gzip
import json
import random
import tempfile
from functools import lru_cache
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from nt_llm.data import DataConfig
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


def files_config(tmp_path: Path, **overrides: object) -> DataConfig:
    settings: dict[str, object] = dict(
        source="files",
        train_files=[str(tmp_path / "train-*.jsonl")],
        validation_files=[str(tmp_path / "validation.jsonl")],
        tokenizer=tiny_tokenizer_dir(),
        seq_len=16,
        batch_size=4,
        shuffle_buffer=8,
        seed=0,
        validation_tokens=200,
        tokenize_batch=8,
    )
    settings.update(overrides)
    return DataConfig(**settings)
