"""Token-weighted validation metrics of a NeuroTrails model.

Per token t with label y and head distributions p_h (softmax of head h's logits):
- ensemble loss: cross-entropy of the averaged logits (what the exported model predicts);
- head loss: each head's cross-entropy alone;
- disagreement: fraction of (token, head pair) where the two heads' top-1 predictions differ;
- KL: mean over ordered head pairs of KL(p_i || p_j);
- ensemble gain: mean head loss - ensemble loss (positive when averaging helps).
Sums are accumulated over tokens and reduced over processes before dividing, so the mean is over tokens,
whatever the batch and process split.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
# Most token positions per forward pass and per fp32 log-probability slab. On the CPU, glibc maps every block
# above 32 MiB afresh and the kernel zero-fills its pages on each allocation. Measured on a tiny model (3 heads,
# 32k pieces, 8192 tokens in batches of 8 x 128, 1 thread, shared 2-core machine): whole batches took 11-12 s
# user + 24 s system time; 512-token chunks 9 s + 18 s; 256-token chunks (one head's chunk of fp32 logits just
# under 32 MiB) 10-12 s + 3-9 s. An accelerator's caching allocator reuses its blocks, so there a chunk only
# bounds memory and a larger one keeps the forwards few.
CPU_CHUNK_TOKENS = 256
ACCELERATOR_CHUNK_TOKENS = 2048
_BATCH_KEYS = ("input_ids", "attention_mask", "labels")
# Sums over millions of tokens: in fp32 their rounding would reach the digits of the ensemble gain, a small
# difference of two such sums.
ACCUMULATE = torch.float64


@dataclass
class EnsembleTotals:
    """Sums over predicted tokens; combine across batches with ``+`` and across processes with ``reduce``."""

    tokens: torch.Tensor  # scalar
    ensemble_nll: torch.Tensor  # scalar
    head_nll: torch.Tensor  # [H]
    disagreements: torch.Tensor  # scalar: summed over unordered head pairs
    kl: torch.Tensor  # scalar: summed over ordered head pairs

    def __add__(self, other: "EnsembleTotals") -> "EnsembleTotals":
        return EnsembleTotals(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        return (self.tokens, self.ensemble_nll, self.head_nll, self.disagreements, self.kl)

    def reduce(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> "EnsembleTotals":
        return EnsembleTotals(*(all_reduce_sum(t) for t in self.as_tuple()))


def batch_totals(
    head_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, chunk_tokens: int = CPU_CHUNK_TOKENS
) -> EnsembleTotals:
    """Totals of one batch: ``head_logits [H, B, T, V]``, ``logits [B, T, V]``, ``labels [B, T]`` (unshifted).

    Works through the predicted tokens ``chunk_tokens`` at a time, gathering only those positions: neither a
    shifted nor a masked copy of ``[H, B, T, V]`` is made, and fp32 log-probabilities exist for one
    ``[H, chunk_tokens, V]`` slab at a time.
    """
    heads, vocab = head_logits.shape[0], head_logits.shape[-1]
    # Position t of a row predicts label t + 1; the last position of a row predicts nothing.
    no_target = torch.full_like(labels[:, :1], IGNORE_INDEX)
    target = torch.cat([labels[:, 1:], no_target], dim=1).reshape(-1)  # [B*T]
    predicted = (target != IGNORE_INDEX).nonzero().squeeze(1)
    head_logits = head_logits.reshape(heads, -1, vocab)  # [H, B*T, V]: a view of the model's contiguous output
    logits = logits.reshape(-1, vocab)  # [B*T, V]
    zero = torch.zeros((), dtype=ACCUMULATE, device=logits.device)
    totals = EnsembleTotals(zero, zero, torch.zeros(heads, dtype=ACCUMULATE, device=logits.device), zero, zero)
    for start in range(0, predicted.numel(), chunk_tokens):
        index = predicted[start : start + chunk_tokens]
        chunk = _chunk_totals(head_logits.index_select(1, index), logits.index_select(0, index), target[index])
        totals = totals + chunk
    return totals


def _chunk_totals(head_logits: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> EnsembleTotals:
    heads = head_logits.shape[0]
    head_logp = F.log_softmax(head_logits.float(), dim=-1)  # [H, N, V]
    head_nll = -head_logp.gather(-1, target.expand(heads, -1)[..., None]).sum(dim=(1, 2))
    if heads == 1 and torch.equal(logits, head_logits[0]):
        ensemble_nll = head_nll[0]  # one head's logits are the ensemble's (the dense model): no second softmax
    else:
        ensemble_nll = F.cross_entropy(logits.float(), target, reduction="sum")
    top1 = head_logp.argmax(-1)  # [H, N]
    disagreements = torch.zeros((), device=logits.device)
    kl = torch.zeros((), device=logits.device)
    if heads > 1:
        # The sum over ordered pairs of KL(p_i || p_j) = sum_i <p_i, sum_j (log p_i - log p_j)>
        # = H * sum_i <p_i, log p_i - mean_j log p_j>: one pass per head instead of one per pair.
        mean_logp = head_logp.mean(dim=0)  # [N, V]: one more slab of one head's size, not of H
        kl = heads * sum((head_logp[i].exp() * (head_logp[i] - mean_logp)).sum() for i in range(heads))
        for i in range(heads):
            for j in range(i + 1, heads):
                disagreements = disagreements + (top1[i] != top1[j]).sum()
    tokens = torch.tensor(float(target.numel()), device=logits.device)
    return EnsembleTotals(*(t.to(ACCUMULATE) for t in (tokens, ensemble_nll, head_nll, disagreements, kl)))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
    chunk_tokens: int | None = None,
) -> dict[str, float]:
    """Metrics over every batch (each process passes its share; ``all_reduce_sum`` combines them).

    ``model(input_ids=, attention_mask=, output_head_logits=True, use_cache=False)`` must return ``logits`` and
    ``head_logits``. Each batch goes through the model ``chunk_tokens // T`` rows at a time (at least one row), so
    a forward holds ``[H, max(chunk_tokens, T), V]`` logits whatever the batch size. The split depends only on
    the batch's shape: every process runs the same number of forwards for same-shaped batches (ZeRO-3, FSDP).
    ``chunk_tokens`` None: ``default_chunk_tokens(device)``.
    """
    if chunk_tokens is None:
        chunk_tokens = default_chunk_tokens(device)
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be an integer >= 1, got {chunk_tokens!r}")
    was_training = model.training
    model.eval()
    totals: EnsembleTotals | None = None
    for batch in batches:
        rows = max(1, chunk_tokens // batch["input_ids"].shape[1])
        for start in range(0, batch["input_ids"].shape[0], rows):
            part = {key: batch[key][start : start + rows].to(device) for key in _BATCH_KEYS}
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                out = model(
                    input_ids=part["input_ids"],
                    attention_mask=part["attention_mask"],
                    output_head_logits=True,
                    use_cache=False,
                )
            current = batch_totals(out.head_logits, out.logits, part["labels"], chunk_tokens)
            del out  # the next forward's logits should reuse this memory, not add to it
            totals = current if totals is None else totals + current
    model.train(was_training)
    if totals is None:
        raise ValueError("evaluate() got no validation batches")
    if all_reduce_sum is not None:
        totals = totals.reduce(all_reduce_sum)
    return summarize(totals)


def default_chunk_tokens(device: torch.device) -> int:
    return CPU_CHUNK_TOKENS if device.type == "cpu" else ACCELERATOR_CHUNK_TOKENS


def summarize(totals: EnsembleTotals) -> dict[str, float]:
    tokens = totals.tokens.item()
    if tokens == 0:
        raise ValueError("no predicted tokens in the validation batches (all labels are -100)")
    heads = totals.head_nll.numel()
    ensemble_loss = totals.ensemble_nll.item() / tokens
    head_losses = [v / tokens for v in totals.head_nll.tolist()]
    metrics = {
        "val_tokens": tokens,
        "ensemble_loss": ensemble_loss,
        "ensemble_ppl": math.exp(ensemble_loss),
        "mean_head_loss": sum(head_losses) / heads,
        "ensemble_gain": sum(head_losses) / heads - ensemble_loss,
    }
    for h, loss in enumerate(head_losses):
        metrics[f"head{h}_loss"] = loss
        metrics[f"head{h}_ppl"] = math.exp(loss)
    if heads > 1:
        metrics["disagreement"] = totals.disagreements.item() / (tokens * heads * (heads - 1) / 2)
        metrics["pairwise_kl"] = totals.kl.item() / (tokens * heads * (heads - 1))
    return metrics
