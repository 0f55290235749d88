"""NeuroTrails LLaMA: a shared backbone of LLaMA decoder blocks, then H heads ("trails").

Identical to ``LlamaForCausalLM`` except that the upper ``head_layers`` blocks, the final norm and the LM head
exist once per head, the output ``logits`` are the mean of the heads' logits, and the loss combines the heads'
losses. All blocks are transformers' own ``LlamaDecoderLayer`` / ``LlamaRMSNorm`` / ``LlamaRotaryEmbedding``.

This file is copied next to exported weights and loaded with ``trust_remote_code``: it may import only
torch, transformers and files in its own folder.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)

from .configuration_neurotrails import NeuroTrailsConfig

IGNORE_INDEX = -100
LOSS_REDUCTIONS = ("sum", "mean")


@dataclass
class NeuroTrailsCausalLMOutput(CausalLMOutputWithPast):
    """``CausalLMOutputWithPast`` whose ``logits`` are the heads' mean, plus per-head results.

    head_logits: ``[H, batch, seq, vocab]``, only when ``output_head_logits=True``.
    head_losses: ``[H]``, each head's causal-LM loss, when labels are given.
    """

    head_logits: torch.Tensor | None = None
    head_losses: torch.Tensor | None = None


class NeuroTrailsHead(nn.Module):
    """One trail: its decoder blocks, final norm, LM head and, in a full ensemble, its own embedding.

    Head ``index``'s block ``j`` is layer ``num_shared_layers + index * head_layers + j`` of the KV cache: every
    head keeps its own keys and values (``NeuroTrailsConfig.num_cache_layers`` slots in all).
    """

    def __init__(self, config: NeuroTrailsConfig, index: int):
        super().__init__()
        self.embed_tokens = None if config.share_embeddings else nn.Embedding(config.vocab_size, config.hidden_size)
        first = config.num_shared_layers + index * config.head_layers
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, first + j) for j in range(config.head_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.lm_head = NeuroTrailsLMHead(config.hidden_size, config.vocab_size, bias=False)


class NeuroTrailsLMHead(nn.Linear):
    """A head's LM head: LLaMA's ``nn.Linear`` (same ``lm_head.weight``), which given ``labels`` returns the causal-LM
    loss's summed NLL instead of logits, computed without keeping any (``linear_cross_entropy``).

    The loss goes through the module's own call so that wrappers gathering a module's sharded weights around its
    forward (DeepSpeed ZeRO-3, FSDP2) have the weight in place while it is used.
    """

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, chunk_size: int = 0) -> torch.Tensor:
        if labels is None:
            return super().forward(hidden)
        target = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)  # next-token targets
        return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), self.weight, target, chunk_size)


class NeuroTrailsForCausalLM(LlamaPreTrainedModel, GenerationMixin):
    config_class = NeuroTrailsConfig
    config: NeuroTrailsConfig
    base_model_prefix = ""
    _no_split_modules = ["LlamaDecoderLayer"]
    _tied_weights_keys = None

    def __init__(self, config: NeuroTrailsConfig):
        super().__init__(config)
        # No padding_idx (LLaMA's is the pad id): the pad id is usually the EOS id, and a padding row is zero and
        # never trained, while in packed training EOS marks every document boundary. Padding needs no frozen row:
        # labels mask it and the attention mask hides it. The same holds for the heads' own embeddings.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size) if config.share_embeddings else None
        self.backbone = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_shared_layers))
        self.heads = nn.ModuleList(NeuroTrailsHead(config, index) for index in range(config.ensemble_size))
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """LLaMA's initialisation, except the token embeddings' std where ``config.embedding_init_std`` sets it."""
        super()._init_weights(module)
        if isinstance(module, nn.Embedding) and self.config.embedding_init_std is not None:
            init.normal_(module.weight, mean=0.0, std=self.config.embedding_init_std)

    def init_weights(self) -> None:
        """transformers' initialisation (``post_init`` calls it once the modules exist), then, with
        ``config.heads_init="copies"``, every head set equal to head 0. ``from_pretrained`` builds the model on the
        meta device, where nothing is initialised or copied, and then loads the saved weights as they are."""
        super().init_weights()
        if self.config.heads_init == "copies" and not any(p.is_meta for p in self.parameters()):
            self.copy_heads()

    @torch.no_grad()
    def copy_heads(self) -> None:
        """Set every head's parameters (blocks, final norm, LM head, its own embedding if any) to head 0's."""
        first = dict(self.heads[0].named_parameters())
        for head in self.heads[1:]:
            for name, param in head.named_parameters():
                param.copy_(first[name])

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens if self.embed_tokens is not None else self.heads[0].embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        if self.embed_tokens is None:
            raise ValueError("a full ensemble (share_embeddings=False) has one embedding per head")
        self.embed_tokens = value

    def get_output_embeddings(self) -> None:
        # Each head owns an LM head: there is no single output embedding to resize or tie.
        return None

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_head_logits: bool = False,
        return_logits: bool = True,
        loss_reduction: str = "sum",
        loss_chunk_size: int = 0,
        **kwargs,
    ) -> NeuroTrailsCausalLMOutput:
        """Backbone, then each head's transformers modules in turn, then the mean of the heads' logits.

        Training-only arguments: ``return_logits=False`` skips the averaged logits (training needs only the loss):
        one ``[B, T, V]`` tensor and a pass over H of them fewer. ``loss_reduction`` combines the heads'
        causal-LM losses: ``"sum"`` (the paper) or ``"mean"``. With labels and no logits asked for, each head's
        loss and its gradients are computed together in the forward (``linear_cross_entropy``), so no logits are
        kept for backward; ``loss_chunk_size > 0`` bounds the logits that exist at once to that many tokens' rows
        (0: all of a head's tokens at once, the fastest).
        """
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is not None and not config.share_embeddings:
            raise ValueError("inputs_embeds is ambiguous for a full ensemble: each head has its own embedding")
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction must be one of {LOSS_REDUCTIONS}, got {loss_reduction!r}")
        if isinstance(loss_chunk_size, bool) or not isinstance(loss_chunk_size, int) or loss_chunk_size < 0:
            raise ValueError(f"loss_chunk_size must be an integer >= 0, got {loss_chunk_size!r}")
        if use_cache is None:
            use_cache = config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=config)
        if cache is not None:
            _add_head_slots(cache, config.num_cache_layers)

        if config.share_embeddings:
            embedded = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)  # [B, T, D]
            shape_like = embedded
        else:
            embedded = [head.embed_tokens(input_ids) for head in self.heads]  # H x [B, T, D]
            shape_like = embedded[0]
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(shape_like.shape[-2], device=shape_like.device).unsqueeze(0) + past
        mask = create_causal_mask(
            config=config,
            inputs_embeds=shape_like,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        blocks = dict(
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=self.rotary_emb(shape_like, position_ids=position_ids),
            **kwargs,
        )

        hidden = embedded
        for layer in self.backbone:
            hidden = layer(hidden, **blocks)
        head_hidden = []  # H x [B, T', D], normed; a list, as stacking would copy every head's activations
        for index, head in enumerate(self.heads):
            x = hidden if config.share_embeddings else embedded[index]
            for layer in head.layers:
                x = layer(x, **blocks)
            head_hidden.append(head.norm(_keep_last(x, logits_to_keep)))

        head_logits = head_losses = loss = None
        if labels is not None and not (return_logits or output_head_logits):
            # Training: no logits leave the forward, and none are kept for backward (the LM head returns the loss).
            head_losses = torch.stack(
                [
                    self._head_loss(x, head.lm_head, labels, loss_chunk_size, **kwargs)
                    for x, head in zip(head_hidden, self.heads, strict=True)
                ]
            )
        else:
            # One LM head at a time: stacking [H, V, D] weights or [H, B, T, V] logits would copy the largest tensors.
            head_logits = [head.lm_head(x) for x, head in zip(head_hidden, self.heads, strict=True)]
            if labels is not None:
                head_losses = torch.stack(
                    [
                        self.loss_function(logits=logits, labels=labels, vocab_size=config.vocab_size, **kwargs)
                        for logits in head_logits
                    ]
                )
        if head_losses is not None:
            loss = head_losses.sum() if loss_reduction == "sum" else head_losses.mean()

        return NeuroTrailsCausalLMOutput(
            loss=loss,
            logits=_mean(head_logits) if return_logits else None,
            cache=cache,
            head_logits=torch.stack(head_logits) if output_head_logits else None,
            head_losses=head_losses,
        )

    def _head_loss(
        self, hidden: torch.Tensor, lm_head: NeuroTrailsLMHead, labels: torch.Tensor, chunk_size: int, **kwargs
    ) -> torch.Tensor:
        """One head's causal-LM loss from its normed ``hidden [B, T, D]``: transformers' ``ForCausalLMLoss``
        (mean over predicted tokens, or over ``num_items_in_batch`` when given)."""
        summed = lm_head(hidden, labels=labels, chunk_size=chunk_size)
        count = kwargs.get("num_items_in_batch")
        if count is None:
            count = (labels[..., 1:] != IGNORE_INDEX).sum()
        return summed / count


def _add_head_slots(cache: Cache, slots: int) -> None:
    """Give ``cache`` one layer per decoder block of the model, ``slots`` in all.

    A cache built from the config (``DynamicCache(config=...)``, what ``generate()`` makes) has
    ``num_hidden_layers`` layers, the depth of one path through the model; the other heads' blocks need their
    own. While the cache is still empty the missing layers are fresh copies of its last one (same kind, same
    sizes). A cache that grows its layers on demand needs nothing.
    """
    missing = slots - len(cache.layers)
    if missing <= 0 or cache.layer_class_to_replicate is not None:
        return
    if cache.get_seq_length() > 0:
        raise ValueError(
            f"the cache holds {len(cache.layers)} layers, this model needs {slots} (one per decoder block of "
            f"the backbone and of every head); pass an empty cache or none"
        )
    cache.layers.extend(copy.deepcopy(cache.layers[-1]) for _ in range(missing))


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, chunk_size: int = 0
) -> torch.Tensor:
    """Summed cross-entropy of ``hidden [N, D] @ weight[V, D].T`` against ``target [N]`` (``IGNORE_INDEX`` rows
    count nothing), as ``F.cross_entropy(logits.float(), target, reduction="sum")`` computes it.

    When a gradient is wanted it is computed here, in the forward, ``chunk_size`` rows at a time (0: all rows at
    once): each chunk's fp32 logits become softmax minus one-hot in place and meet ``weight`` and ``hidden`` in
    the two gradient matmuls straight away. Backward only scales the stored gradients. Against autograd through
    whole logits this keeps no ``[N, V]`` tensor for backward and makes none of log-softmax's outputs and
    gradients (the same three matmuls; the rest is memory traffic). Under autocast the matmuls run in its dtype.
    """
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, target, chunk_size)
    return _nll_and_gradients(hidden, weight, target, chunk_size, with_hidden=False, with_weight=False)[0]


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target, chunk_size):
        want_hidden, want_weight = ctx.needs_input_grad[:2]
        total, grad_hidden, grad_weight = _nll_and_gradients(
            hidden, weight, target, chunk_size, with_hidden=want_hidden, with_weight=want_weight
        )
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            None if grad_hidden is None else grad_hidden * grad_total.to(grad_hidden.dtype),
            None if grad_weight is None else grad_weight * grad_total.to(grad_weight.dtype),
            None,
            None,
        )


def _nll_and_gradients(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    chunk_size: int,
    with_hidden: bool,
    with_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``linear_cross_entropy``'s loop: the summed NLL and, as asked, its gradients for ``hidden`` and ``weight``."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    rows = hidden.shape[0]
    step = chunk_size if chunk_size > 0 else max(rows, 1)
    grad_hidden = torch.empty_like(hidden) if with_hidden else None
    grad_weight = torch.zeros_like(weight) if with_weight else None
    total = hidden.new_zeros((), dtype=torch.float32)
    # Autocast off: the casts are explicit, and the in-place accumulation below is not an op autocast casts.
    with torch.autocast(device, enabled=False):
        w = weight.detach().to(dtype)
        for start in range(0, rows, step):
            part = slice(start, start + step)
            h = hidden[part].detach().to(dtype)
            t = target[part]
            valid = t != IGNORE_INDEX
            safe = torch.where(valid, t, 0)
            logits = (h @ w.t()).float()  # [chunk, V], the only logits alive
            logits.sub_(logits.amax(dim=-1, keepdim=True))
            picked = logits.gather(1, safe.unsqueeze(1)).squeeze(1)
            sums = logits.exp_().sum(dim=-1)
            total = total + torch.where(valid, sums.log() - picked, 0.0).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d(sum NLL)/d(logits) = softmax - one-hot, zero on ignored rows: built in the logits' storage.
            probs = logits.mul_((valid / sums).unsqueeze(1))
            probs.scatter_add_(1, safe.unsqueeze(1), -valid.to(probs.dtype).unsqueeze(1))
            grad_logits = probs.to(dtype)
            if grad_hidden is not None:
                grad_hidden[part] = grad_logits @ w
            if grad_weight is not None:  # accumulated in the weight's dtype; in place when the dtypes agree
                if grad_weight.dtype == dtype:
                    grad_weight.addmm_(grad_logits.t(), h)
                else:
                    grad_weight += grad_logits.t() @ h
    return total, grad_hidden, grad_weight


def _mean(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Mean of same-shaped tensors without stacking them (a stack would copy all H of them)."""
    return sum(tensors[1:], tensors[0]) / len(tensors)


def _keep_last(hidden: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """Slice the sequence dim (-2) as transformers' ``logits_to_keep`` does: an int keeps the last N (0 = all)."""
    if isinstance(logits_to_keep, int):
        return hidden if logits_to_keep == 0 else hidden[..., -logits_to_keep:, :]
    return hidden[..., logits_to_keep, :]
