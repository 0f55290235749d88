"""A fixed validation set (a token budget, identical across runs and world sizes) and a correct mean loss."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch

from .pipeline import IGNORE_INDEX, Batch, RowBuilder, collate_tensors

logger = logging.getLogger(__name__)


class ValidationSet:
    """The first `token_budget` real tokens of the validation stream, as rows split across ranks.

    The rows are the same for every world size (the stream is read unshuffled and unsharded), so a
    perplexity is comparable between runs on different numbers of processes. Rank r evaluates rows
    r, r + W, ...; ranks are topped up with empty rows (no real token, all labels -100) so that every
    rank runs the same number of forward passes, which ZeRO-3 and FSDP require.
    """

    def __init__(
        self, rows: RowBuilder, token_budget: int, batch_size: int, *, rank: int = 0, world_size: int = 1
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.token_budget = token_budget
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seq_len = rows.seq_len
        self._pad_id = rows.pad_id
        ids, n_real = _rows_within_budget(rows, token_budget)
        self.num_tokens = int(n_real.sum())
        if self.num_tokens < token_budget:
            logger.warning(
                "validation split has only %d tokens, fewer than the budget of %d: using all of them",
                self.num_tokens,
                token_budget,
            )
        per_step = batch_size * world_size
        missing = -(-len(ids) // per_step) * per_step - len(ids)
        ids = torch.cat([ids, torch.full((missing, self.seq_len), self._pad_id, dtype=ids.dtype)])
        n_real = torch.cat([n_real, torch.zeros(missing, dtype=n_real.dtype)])
        self._ids = ids[rank::world_size]
        self._n_real = n_real[rank::world_size]

    def __len__(self) -> int:
        return -(-len(self._ids) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self._ids), self.batch_size):
            end = start + self.batch_size
            yield collate_tensors(self._ids[start:end], self._n_real[start:end])


def _rows_within_budget(rows: RowBuilder, token_budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows until `token_budget` real tokens, as int32 ids [N, T] and real lengths [N]; the last row is
    cut so that the total is exactly the budget. int32 keeps the paper's 10M tokens at 40 MB."""
    out: list[torch.Tensor] = []
    lengths: list[int] = []
    total = 0
    for row in rows:
        keep = min(row.n_real, token_budget - total)
        out.append(torch.tensor(row.ids[:keep] + [rows.pad_id] * (len(row.ids) - keep), dtype=torch.int32))
        lengths.append(keep)
        total += keep
        if total == token_budget:
            break
    if total == 0:
        raise ValueError("the validation split yielded no tokens; the corpus is empty")
    return torch.stack(out), torch.tensor(lengths, dtype=torch.int32)


def count_predicted_tokens(labels: torch.Tensor) -> int:
    """Tokens a causal-LM loss averages over: labels are shifted by one inside the model, so the first
    position of every row is never a target."""
    return int((labels[..., 1:] != IGNORE_INDEX).sum())


class TokenMeanLoss:
    """Mean loss over all predicted tokens of an evaluation, not a mean of per-batch means.

    Each batch's mean loss is weighted by its number of predicted tokens; batches without any (the
    filler rows above) are skipped, whatever their loss value is (NaN for an empty mean).
    """

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.tokens = 0

    def update(self, mean_loss: torch.Tensor | float, labels: torch.Tensor) -> None:
        """Add a batch whose loss is the mean over its predicted tokens (what HF causal LMs return)."""
        tokens = count_predicted_tokens(labels)
        self.update_sum(float(mean_loss) * tokens, tokens)

    def update_sum(self, loss_sum: torch.Tensor | float, tokens: int) -> None:
        """Add a summed loss over `tokens` predicted tokens."""
        if tokens == 0:
            return
        self.loss_sum += float(loss_sum)
        self.tokens += int(tokens)

    def compute(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
        """The token-weighted mean; pass e.g. `lambda t: accelerator.reduce(t, "sum")` to combine ranks."""
        totals = torch.tensor([self.loss_sum, float(self.tokens)], dtype=torch.float64)
        if all_reduce_sum is not None:
            totals = all_reduce_sum(totals)
        if totals[1] == 0:
            raise ValueError("TokenMeanLoss.compute: no predicted tokens were added")
        return float(totals[0] / totals[1])
