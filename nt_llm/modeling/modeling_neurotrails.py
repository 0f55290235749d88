"""NeuroTrails LLaMA: a shared backbone of LLaMA decoder blocks, then H heads ("trails").

Identical to ``LlamaForCausalLM`` except that the upper ``head_layers`` blocks, the final norm and the LM head
exist once per head, the output ``logits`` are the mean of the heads' logits, and the loss combines the heads'
losses. All blocks are transformers' own ``LlamaDecoderLayer`` / ``LlamaRMSNorm`` / ``LlamaRotaryEmbedding``.

This file is copied next to exported weights and loaded with ``trust_remote_code``: it may import only
torch, transformers and files in its own folder.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from .configuration_neurotrails import NeuroTrailsConfig

IGNORE_INDEX = -100


@dataclass
class NeuroTrailsCausalLMOutput(CausalLMOutputWithPast):
    """``CausalLMOutputWithPast`` whose ``logits`` are the heads' mean, plus per-head results.

    head_logits: ``[H, batch, seq, vocab]``, only when ``output_head_logits=True``.
    head_losses: ``[H]``, each head's causal-LM loss, when labels are given.
    """

    head_logits: torch.Tensor | None = None
    head_losses: torch.Tensor | None = None


class NeuroTrailsHead(nn.Module):
    """One trail: its decoder blocks, final norm, LM head and, in a full ensemble, its own embedding."""

    def __init__(self, config: NeuroTrailsConfig):
        super().__init__()
        self.embed_tokens = None if config.share_embeddings else nn.Embedding(config.vocab_size, config.hidden_size)
        # Every head's block j writes the same cache slot (heads are folded into it: _update_folded_cache).
        first = config.num_shared_layers
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, first + j) for j in range(config.head_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


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
        self.heads = nn.ModuleList(NeuroTrailsHead(config) for _ in range(config.ensemble_size))
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.post_init()

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
        **kwargs,
    ) -> NeuroTrailsCausalLMOutput:
        """``return_logits=False`` skips the averaged logits (training needs only the loss): one ``[B, T, V]``
        tensor and a pass over H of them fewer."""
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is not None and not config.share_embeddings:
            raise ValueError("inputs_embeds is ambiguous for a full ensemble: each head has its own embedding")
        if use_cache is None:
            use_cache = config.use_cache and not self.training and config.head_execution == "batched"
        if use_cache and cache is None:
            cache = DynamicCache(config=config)
        if cache is not None and config.head_execution == "loop":
            raise ValueError('head_execution="loop" is the no-cache reference; use "batched" with a KV cache')

        if config.share_embeddings:
            hidden = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)  # [B, T, D]
        else:
            hidden = torch.stack([head.embed_tokens(input_ids) for head in self.heads])  # [H, B, T, D]
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(hidden.shape[-2], device=hidden.device).unsqueeze(0) + past
        shape_like = hidden if config.share_embeddings else hidden[0]
        mask = create_causal_mask(
            config=config,
            inputs_embeds=shape_like,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(shape_like, position_ids=position_ids)

        for layer in self.backbone:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )

        if config.head_execution == "batched":
            hidden = self._heads_batched(hidden, mask, position_embeddings, cache, **kwargs)
        else:
            hidden = self._heads_loop(hidden, mask, position_ids, position_embeddings, **kwargs)
        hidden = _keep_last(hidden, logits_to_keep)  # [H, B, T', D]
        head_logits = head_losses = loss = None
        if labels is not None and config.loss_chunk_size and not (return_logits or output_head_logits):
            # Training without logits: [B, T, V] per head is never held, only one chunk of it at a time.
            num_items = kwargs.get("num_items_in_batch")
            head_losses = torch.stack(
                [
                    _chunked_causal_lm_loss(hidden[index], head.lm_head, labels, config.loss_chunk_size, num_items)
                    for index, head in enumerate(self.heads)
                ]
            )
        else:
            # One LM head at a time: stacking [H, V, D] weights or [H, B, T, V] logits would copy the largest tensors.
            head_logits = [head.lm_head(hidden[index]) for index, head in enumerate(self.heads)]
            if labels is not None:
                head_losses = torch.stack(
                    [
                        self.loss_function(logits=logits, labels=labels, vocab_size=config.vocab_size, **kwargs)
                        for logits in head_logits
                    ]
                )
        if head_losses is not None:
            loss = head_losses.sum() if config.loss_reduction == "sum" else head_losses.mean()

        return NeuroTrailsCausalLMOutput(
            loss=loss,
            logits=_mean(head_logits) if return_logits else None,
            cache=cache,
            head_logits=torch.stack(head_logits) if output_head_logits else None,
            head_losses=head_losses,
        )

    def _heads_loop(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        **kwargs,
    ) -> torch.Tensor:
        """Reference execution: each head's transformers modules in turn. Returns normed ``[H, B, T, D]``."""
        outputs = []
        for index, head in enumerate(self.heads):
            x = hidden if self.config.share_embeddings else hidden[index]
            for layer in head.layers:
                x = layer(
                    x, attention_mask=mask, position_ids=position_ids, position_embeddings=position_embeddings, **kwargs
                )
            outputs.append(head.norm(x))
        return torch.stack(outputs)

    def _heads_batched(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache: Cache | None,
        **kwargs,
    ) -> torch.Tensor:
        """All heads' blocks as one computation over stacked weights, heads folded into the batch for attention.

        Same arithmetic as ``_heads_loop`` (tested against it). Returns normed ``[H, B, T, D]``.
        """
        heads_count = self.config.ensemble_size
        x = hidden.expand(heads_count, *hidden.shape) if self.config.share_embeddings else hidden  # [H, B, T, D]
        if mask is not None and not isinstance(mask, torch.Tensor):
            raise ValueError(
                f'head_execution="batched" needs a tensor attention mask, got {type(mask).__name__}; '
                f"use attn_implementation sdpa or eager"
            )
        for j in range(self.config.head_layers):
            layers = [head.layers[j] for head in self.heads]
            if self.training and layers[0].gradient_checkpointing:
                x = checkpoint(
                    _batched_decoder_layer, layers, x, mask, position_embeddings, cache, use_reentrant=False, **kwargs
                )
            else:
                x = _batched_decoder_layer(layers, x, mask, position_embeddings, cache, **kwargs)
        return _batched_rms_norm(x, [head.norm for head in self.heads])


def _chunked_causal_lm_loss(
    hidden: torch.Tensor,
    lm_head: nn.Linear,
    labels: torch.Tensor,
    chunk_size: int,
    num_items_in_batch: torch.Tensor | int | None,
) -> torch.Tensor:
    """transformers' causal-LM loss (shifted labels, -100 ignored, mean over predicted tokens or over
    ``num_items_in_batch``) from ``hidden [B, T, D]``, ``chunk_size`` tokens at a time. Each chunk's logits are
    recomputed in the backward pass instead of being kept: one LM-head forward more, ``[chunk, V]`` memory."""
    target = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].reshape(-1)
    hidden = hidden.reshape(-1, hidden.shape[-1])
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, target.numel(), chunk_size):
        part = slice(start, start + chunk_size)
        total = total + checkpoint(_summed_nll, hidden[part], target[part], lm_head, use_reentrant=False)
    count = num_items_in_batch if num_items_in_batch is not None else (target != IGNORE_INDEX).sum()
    return total / count


def _summed_nll(hidden: torch.Tensor, target: torch.Tensor, lm_head: nn.Linear) -> torch.Tensor:
    return F.cross_entropy(lm_head(hidden).float(), target, ignore_index=IGNORE_INDEX, reduction="sum")


def _mean(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Mean of same-shaped tensors without stacking them (a stack would copy all H of them)."""
    return sum(tensors[1:], tensors[0]) / len(tensors)


def _keep_last(hidden: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """Slice the sequence dim (-2) as transformers' ``logits_to_keep`` does: an int keeps the last N (0 = all)."""
    if isinstance(logits_to_keep, int):
        return hidden if logits_to_keep == 0 else hidden[..., -logits_to_keep:, :]
    return hidden[..., logits_to_keep, :]


def _batched_linear(x: torch.Tensor, linears: list[nn.Linear]) -> torch.Tensor:
    """``x [H, B, T, in]`` through H linears at once: ``[H, B, T, out]``.

    With autograd, one bmm over stacked weights: the stack copies the weights once per forward, which a
    training batch amortises. Without it (inference, decoding token by token) a copy of every head weight per
    token would dominate: each head's own matmul, outputs stacked, copies only activations.
    """
    if not torch.is_grad_enabled():
        return torch.stack([F.linear(x[h], linear.weight, linear.bias) for h, linear in enumerate(linears)])
    heads, batch, seq, width = x.shape
    weight = torch.stack([linear.weight for linear in linears])  # [H, out, in]
    out = torch.bmm(x.reshape(heads, batch * seq, width), weight.transpose(1, 2))
    if linears[0].bias is not None:
        out = out + torch.stack([linear.bias for linear in linears]).unsqueeze(1)
    return out.view(heads, batch, seq, -1)


def _batched_rms_norm(x: torch.Tensor, norms: list[LlamaRMSNorm]) -> torch.Tensor:
    """LlamaRMSNorm over ``[H, B, T, D]`` with one weight per head, in the same precision steps."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norms[0].variance_epsilon)
    weight = torch.stack([norm.weight for norm in norms])[:, None, None, :]
    return weight * x.to(dtype)


def _update_folded_cache(
    cache: Cache, layer_idx: int, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append ``[H, B, kv_heads, T, d]`` keys/values to cache slot ``layer_idx``; return the full ones.

    The slot stores every head's keys as ``[B, H * kv_heads, S, d]``: heads live in the kv-head dim, not the
    batch dim, so beam search (which reorders dim 0) stays correct, and the cache needs exactly as many slots
    as one path through the model has blocks (what ``DynamicCache(config)`` allocates).
    """
    heads, batch, kv_heads, _, dim = key.shape

    def fold(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(0, 1).reshape(batch, heads * kv_heads, -1, dim)

    def unfold(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, heads, kv_heads, -1, dim).transpose(0, 1)

    key, value = cache.update(fold(key), fold(value), layer_idx)
    return unfold(key), unfold(value)


def _batched_decoder_layer(
    layers: list[LlamaDecoderLayer],
    x: torch.Tensor,
    mask: torch.Tensor | None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    cache: Cache | None,
    **kwargs,
) -> torch.Tensor:
    """H ``LlamaDecoderLayer`` s (same position in each head) on ``x [H, B, T, D]``, as one computation."""
    heads, batch, seq, _ = x.shape
    attn = layers[0].self_attn
    head_dim = attn.head_dim

    h = _batched_rms_norm(x, [layer.input_layernorm for layer in layers])
    q = _batched_linear(h, [layer.self_attn.q_proj for layer in layers]).view(heads, batch, seq, -1, head_dim)
    k = _batched_linear(h, [layer.self_attn.k_proj for layer in layers]).view(heads, batch, seq, -1, head_dim)
    v = _batched_linear(h, [layer.self_attn.v_proj for layer in layers]).view(heads, batch, seq, -1, head_dim)
    q, k, v = q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3)  # [H, B, heads_or_kv, T, d]
    cos, sin = position_embeddings  # [B, T, d]: unsqueeze(1) broadcasts over attention heads, then H in front
    q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
    if cache is not None:
        k, v = _update_folded_cache(cache, attn.layer_idx, k, v)

    attention = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
    folded_mask = None if mask is None else mask.repeat(heads, 1, 1, 1)
    out, _ = attention(
        attn,
        q.flatten(0, 1),
        k.flatten(0, 1),
        v.flatten(0, 1),
        folded_mask,
        dropout=attn.attention_dropout if attn.training else 0.0,
        scaling=attn.scaling,
        **kwargs,
    )  # [H * B, T, heads, d]
    out = _batched_linear(out.reshape(heads, batch, seq, -1), [layer.self_attn.o_proj for layer in layers])
    x = x + out

    h = _batched_rms_norm(x, [layer.post_attention_layernorm for layer in layers])
    act = layers[0].mlp.act_fn
    gate = _batched_linear(h, [layer.mlp.gate_proj for layer in layers])
    up = _batched_linear(h, [layer.mlp.up_proj for layer in layers])
    return x + _batched_linear(act(gate) * up, [layer.mlp.down_proj for layer in layers])
