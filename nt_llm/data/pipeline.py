"""Documents -> token rows -> [B, T] batches, in the paper's pad/truncate mode or packed.

pack: documents are tokenized as the tokenizer does at inference (LLaMA: BOS first; T5: EOS last),
      each ends with EOS, and they are concatenated and cut into rows of exactly T tokens; no padding,
      so every position is trained on, and a document boundary is always an EOS.
pad:  each document is tokenized with the tokenizer's own special tokens, truncated to T and padded
      on the right; pad positions get attention 0 and label -100 (the paper's setup, needed to compare
      perplexities with it).

Pre-tokenized documents (lists of token ids) skip the tokenizer and are taken as they are (no BOS added):
packing still ends each with EOS, padding still truncates it to T.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .mix import MixedStream
from .sources import Document, DocumentStream

IGNORE_INDEX = -100
Batch = dict[str, torch.Tensor]


@dataclass
class Row:
    """One sequence of T token ids whose first `n_real` positions are real text (the rest padding)."""

    ids: list[int]
    n_real: int


class RowBuilder:
    """Turns a document stream into rows; holds the tokens read but not yet emitted, for resume."""

    def __init__(
        self,
        docs: DocumentStream | MixedStream,
        tokenizer: PreTrainedTokenizerBase,
        seq_len: int,
        mode: str,
        tokenize_batch: int = 64,
    ) -> None:
        if mode not in ("pack", "pad"):
            raise ValueError(f"mode must be 'pack' or 'pad', got {mode!r}")
        self.docs = docs
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.mode = mode
        self.tokenize_batch = tokenize_batch
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.vocab_size = len(tokenizer)
        # pack: a flat list of token ids; pad: one list of (already truncated) ids per document.
        self._pending: list[Any] = []
        self._doc_iter: Iterator[Document] | None = None

    def __iter__(self) -> Iterator[Row]:
        while True:
            row = self._next_row()
            if row is None:
                return
            yield row

    def _next_row(self) -> Row | None:
        if self.mode == "pack":
            while len(self._pending) < self.seq_len and self._refill():
                pass
            if not self._pending:
                return None
            ids = self._pending[: self.seq_len]
            del self._pending[: self.seq_len]
            # Only the end of a finite stream leaves a short row: pad it rather than drop tokens.
            return Row(ids + [self.pad_id] * (self.seq_len - len(ids)), len(ids))
        if not self._pending and not self._refill():
            return None
        ids = self._pending.pop(0)
        return Row(ids + [self.pad_id] * (self.seq_len - len(ids)), len(ids))

    def _refill(self) -> bool:
        """Tokenize the next group of documents into the pending buffer; False at the end of the stream."""
        if self._doc_iter is None:
            self._doc_iter = iter(self.docs)
        docs = list(islice(self._doc_iter, self.tokenize_batch))
        if not docs:
            return False
        for ids in self._encode(docs):
            if self.mode == "pack":
                self._pending.extend(ids)
                if not ids or ids[-1] != self.eos_id:
                    self._pending.append(self.eos_id)
            else:
                self._pending.append(list(ids))
        return True

    def _encode(self, docs: list[Document]) -> Iterator[list[int]]:
        """Token ids of each document, in order: the texts in one tokenizer call, pre-tokenized ones as given."""
        texts = [doc for doc in docs if isinstance(doc, str)]
        encoded: Iterator[list[int]] = iter(())
        if texts and self.mode == "pack":
            encoded = iter(self.tokenizer(texts)["input_ids"])
        elif texts:
            encoded = iter(self.tokenizer(texts, truncation=True, max_length=self.seq_len)["input_ids"])
        for doc in docs:
            if isinstance(doc, str):
                yield next(encoded)
            else:
                self._check_ids(doc)
                yield doc if self.mode == "pack" else doc[: self.seq_len]

    def _check_ids(self, ids: list[int]) -> None:
        # An id beyond the embedding would fail deep inside the model's forward, far from its cause.
        low, high = min(ids), max(ids)
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"{self.docs.name}: token id {bad} is outside the tokenizer's {self.vocab_size} ids (data.tokenizer "
                f"{self.tokenizer.name_or_path!r}); pre-tokenized data must use that tokenizer's ids"
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "docs": self.docs.state_dict(),
            "pending": [list(p) if isinstance(p, list) else p for p in self._pending],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.docs.load_state_dict(state["docs"])
        self._pending = [list(p) if isinstance(p, list) else p for p in state["pending"]]
        self._doc_iter = None


def collate(rows: list[Row]) -> Batch:
    """Rows -> LongTensors [B, T]: input_ids, attention_mask (1 on real tokens), labels (-100 on padding)."""
    return collate_tensors(torch.tensor([r.ids for r in rows]), torch.tensor([r.n_real for r in rows]))


def collate_tensors(ids: torch.Tensor, n_real: torch.Tensor) -> Batch:
    """Token ids [B, T] whose first n_real[b] positions are real -> the batch dict of LongTensors."""
    input_ids = ids.long()
    positions = torch.arange(input_ids.shape[1])
    attention_mask = (positions[None, :] < n_real.long()[:, None]).long()
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def real_token_fraction(batch: Batch) -> float:
    """Share of the batch's positions holding real text (1.0 when packed)."""
    return batch["attention_mask"].float().mean().item()


def batch_stats(batches: int, real_tokens: int, total_tokens: int, counters: dict[str, int]) -> dict[str, float]:
    fraction = real_tokens / total_tokens if total_tokens else 0.0
    return {
        "batches": batches,
        "tokens": total_tokens,
        "real_tokens": real_tokens,
        "real_token_fraction": fraction,
        **counters,
    }


class TrainBatches:
    """Endless training batches for one rank, resumable exactly with `state_dict`/`load_state_dict`.

    Iterate it directly (not through a DataLoader with workers, which would copy the state into
    worker processes, nor through `accelerator.prepare`, which would shard a second time).
    """

    def __init__(self, rows: RowBuilder, batch_size: int) -> None:
        self.rows = rows
        self.batch_size = batch_size
        self.batches = 0
        self.real_tokens = 0
        self.total_tokens = 0

    def __iter__(self) -> Iterator[Batch]:
        row_iter = iter(self.rows)
        while True:
            rows = list(islice(row_iter, self.batch_size))
            if not rows:
                return
            batch = collate(rows)
            self.batches += 1
            self.real_tokens += int(batch["attention_mask"].sum())
            self.total_tokens += batch["attention_mask"].numel()
            yield batch

    def stats(self) -> dict[str, float]:
        """Cumulative counts for logging: batches, tokens, real-token fraction, documents, skips."""
        return batch_stats(self.batches, self.real_tokens, self.total_tokens, self.rows.docs.counters.as_dict())

    def state_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows.state_dict(),
            "batches": self.batches,
            "real_tokens": self.real_tokens,
            "total_tokens": self.total_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows.load_state_dict(state["rows"])
        self.batches = state["batches"]
        self.real_tokens = state["real_tokens"]
        self.total_tokens = state["total_tokens"]
