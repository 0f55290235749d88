"""Data for nt_llm: sources, tokenizer, packing or the paper's pad/truncate, rank sharding, exact resume.

Sources (`DataConfig.source`): the embedded corpus, local files, any Hugging Face dataset (`hub`: a Hub id, a
Hub-layout folder or a save_to_disk folder; text or pre-tokenized), a weighted `mix` of those, and C4, a preset
of `hub`.

Typical use in a training loop (rank/world_size from the Accelerator):

    cfg = DataConfig(source="embedded", seq_len=256, batch_size=8)
    tokenizer = build_tokenizer(cfg)
    train = build_train_batches(cfg, tokenizer, rank, world_size)   # state_dict()/load_state_dict()
    for batch in train: ...                                          # input_ids/labels/attention_mask [B, T]
    val = build_validation_set(cfg, tokenizer, rank, world_size)    # same rows on every run
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from .config import DataConfig, HubSource, MixSource
from .hub import Settings, c4_source, open_hub_split
from .mix import MixedStream
from .pipeline import IGNORE_INDEX, RowBuilder, TrainBatches, collate, real_token_fraction
from .prefetch import PrefetchedBatches
from .sources import DocumentStream, OpenedSplit, open_file_split
from .tokenizer import build_tokenizer, vocab_size_of
from .validation import TokenMeanLoss, ValidationSet, count_predicted_tokens


def open_split(cfg: DataConfig, split: str) -> OpenedSplit:
    """Open `split` ("train" or "validation") of the configured source; a mix opens each source on its own."""
    if cfg.source == "mix":
        raise ValueError("DataConfig.source='mix' has one split per source: open them with hub.open_hub_split")
    if cfg.source == "c4":
        source, setting = c4_source(cfg)
        return open_hub_split(source, split, setting)
    if cfg.source == "hub":
        assert cfg.hub is not None  # DataConfig checks it
        return open_hub_split(cfg.hub, split, Settings("DataConfig.hub"))
    return open_file_split(cfg, split)


def build_document_stream(
    cfg: DataConfig, split: str, rank: int = 0, world_size: int = 1
) -> DocumentStream | MixedStream:
    """Documents of `split` for one rank: shuffled and endless for train, in order and once for validation."""
    if cfg.source != "mix":
        return _stream(open_split(cfg, split), cfg, split, rank, world_size, f"{cfg.source}/{split}")
    assert cfg.mix is not None  # DataConfig checks it
    parts = []
    for key, source in cfg.mix.items():
        opened = open_hub_split(source, split, Settings(f"DataConfig.mix.{key}"))
        parts.append((key, source.weight, _stream(opened, cfg, split, rank, world_size, f"mix/{key}/{split}")))
    train = split == "train"
    return MixedStream(parts, seed=cfg.stream_seed, rank=rank, world_size=world_size, sample=train, name=f"mix/{split}")


def _stream(opened: OpenedSplit, cfg: DataConfig, split: str, rank: int, world_size: int, name: str) -> DocumentStream:
    train = split == "train"
    return DocumentStream(
        opened.dataset,
        opened.field,
        rank=rank,
        world_size=world_size,
        seed=cfg.stream_seed,
        buffer_size=cfg.shuffle_buffer if train else 0,
        repeat=train,
        name=name,
        tokens=opened.tokens,
        holdout=opened.holdout,
        setting=opened.setting,
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
    "HubSource",
    "MixSource",
    "MixedStream",
    "OpenedSplit",
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
