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


@dataclass
class EnsembleTotals:
    """Sums over predicted tokens; combine across batches with ``+`` and across processes with ``reduce``."""

    tokens: torch.Tensor  # scalar
    ensemble_nll: torch.Tensor  # scalar
    head_nll: torch.Tensor  # [H]
    disagreements: torch.Tensor  # scalar: summed over unordered head pairs
    kl: torch.Tensor  # scalar: summed over ordered head pairs

    def __add__(self, other: "EnsembleTotals") -> "EnsembleTotals":
        return EnsembleTotals(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        return (self.tokens, self.ensemble_nll, self.head_nll, self.disagreements, self.kl)

    def reduce(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> "EnsembleTotals":
        return EnsembleTotals(*(all_reduce_sum(t) for t in self.as_tuple()))


def batch_totals(
    head_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, chunk_tokens: int = 512
) -> EnsembleTotals:
    """Totals of one batch: ``head_logits [H, B, T, V]``, ``logits [B, T, V]``, ``labels [B, T]`` (unshifted).

    Works through the predicted tokens ``chunk_tokens`` at a time: fp32 log-probabilities of H heads over the
    vocabulary are the memory peak.
    """
    heads, vocab = head_logits.shape[0], head_logits.shape[-1]
    target = labels[:, 1:].reshape(-1)
    keep = target != IGNORE_INDEX
    target = target[keep]
    head_logits = head_logits[:, :, :-1].reshape(heads, -1, vocab)[:, keep]  # [H, N, V]
    logits = logits[:, :-1].reshape(-1, vocab)[keep]  # [N, V]
    zero = torch.zeros((), device=logits.device)
    totals = EnsembleTotals(zero, zero, torch.zeros(heads, device=logits.device), zero, zero)
    for start in range(0, target.numel(), chunk_tokens):
        part = slice(start, start + chunk_tokens)
        totals = totals + _chunk_totals(head_logits[:, part], logits[part], target[part])
    return totals


def _chunk_totals(head_logits: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> EnsembleTotals:
    heads = head_logits.shape[0]
    head_logp = F.log_softmax(head_logits.float(), dim=-1)  # [H, N, V]
    ensemble_nll = F.cross_entropy(logits.float(), target, reduction="sum")
    head_nll = -head_logp.gather(-1, target.expand(heads, -1)[..., None]).sum(dim=(1, 2))
    top1 = head_logp.argmax(-1)  # [H, N]
    disagreements = torch.zeros((), device=logits.device)
    kl = torch.zeros((), device=logits.device)
    for i in range(heads):
        for j in range(heads):
            if i != j:
                kl = kl + F.kl_div(head_logp[j], head_logp[i], log_target=True, reduction="sum")  # KL(p_i || p_j)
            if i < j:
                disagreements = disagreements + (top1[i] != top1[j]).sum()
    tokens = torch.tensor(float(target.numel()), device=logits.device)
    return EnsembleTotals(tokens, ensemble_nll, head_nll, disagreements.float(), kl)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Metrics over every batch (each process passes its share; ``all_reduce_sum`` combines them)."""
    was_training = model.training
    model.eval()
    totals: EnsembleTotals | None = None
    for batch in batches:
        input_ids = batch["input_ids"].to(device)
        attention_mask = batch["attention_mask"].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_head_logits=True, use_cache=False)
        current = batch_totals(out.head_logits, out.logits, batch["labels"].to(device))
        totals = current if totals is None else totals + current
    model.train(was_training)
    if totals is None:
        raise ValueError("evaluate() got no validation batches")
    if all_reduce_sum is not None:
        totals = totals.reduce(all_reduce_sum)
    return summarize(totals)


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
