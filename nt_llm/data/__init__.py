"""Data for nt_llm: sources, tokenizer, packing or the paper's pad/truncate, rank sharding, exact resume.

Typical use in a training loop (rank/world_size from the Accelerator):

    cfg = DataConfig(source="embedded", seq_len=256, batch_size=8)
    tokenizer = build_tokenizer(cfg)
    train = build_train_batches(cfg, tokenizer, rank, world_size)   # state_dict()/load_state_dict()
    for batch in train: ...                                          # input_ids/labels/attention_mask [B, T]
    val = build_validation_set(cfg, tokenizer, rank, world_size)    # same rows on every run
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from .config import DataConfig
from .pipeline import IGNORE_INDEX, RowBuilder, TrainBatches, collate, real_token_fraction
from .prefetch import PrefetchedBatches
from .sources import DocumentStream, open_split
from .tokenizer import build_tokenizer, vocab_size_of
from .validation import TokenMeanLoss, ValidationSet, count_predicted_tokens


def build_document_stream(cfg: DataConfig, split: str, rank: int = 0, world_size: int = 1) -> DocumentStream:
    """Documents of `split` for one rank: shuffled and endless for train, in order and once for validation."""
    dataset, text_field = open_split(cfg, split)
    train = split == "train"
    return DocumentStream(
        dataset,
        text_field,
        rank=rank,
        world_size=world_size,
        seed=cfg.stream_seed,
        buffer_size=cfg.shuffle_buffer if train else 0,
        repeat=train,
        name=f"{cfg.source}/{split}",
    )


def build_train_batches(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, rank: int = 0, world_size: int = 1
) -> TrainBatches | PrefetchedBatches:
    """Endless [batch_size, seq_len] training batches for this rank, disjoint from the other ranks'.

    Both return types iterate batches and have `state_dict()`, `load_state_dict()` and `stats()`.
    """
    docs = build_document_stream(cfg, "train", rank, world_size)
    batches = TrainBatches(RowBuilder(docs, tokenizer, cfg.seq_len, cfg.mode, cfg.tokenize_batch), cfg.batch_size)
    return PrefetchedBatches(batches, cfg.prefetch) if cfg.prefetch else batches


def build_validation_set(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, rank: int = 0, world_size: int = 1
) -> ValidationSet:
    """This rank's share of the first `cfg.validation_tokens` tokens of the validation split."""
    docs = build_document_stream(cfg, "validation")
    rows = RowBuilder(docs, tokenizer, cfg.seq_len, cfg.mode, cfg.tokenize_batch)
    return ValidationSet(rows, cfg.validation_tokens, cfg.eval_batch_size, rank=rank, world_size=world_size)


__all__ = [
    "IGNORE_INDEX",
    "DataConfig",
    "DocumentStream",
    "PrefetchedBatches",
    "RowBuilder",
    "TokenMeanLoss",
    "TrainBatches",
    "ValidationSet",
    "build_document_stream",
    "build_tokenizer",
    "build_train_batches",
    "build_validation_set",
    "collate",
    "count_predicted_tokens",
    "open_split",
    "real_token_fraction",
    "vocab_size_of",
]
