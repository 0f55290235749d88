"""Analytic FLOP counts of NeuroTrails models, shared by the benchmarks and the reproduction.

What is counted, per token:
- every linear layer a token passes through costs 2 FLOPs per weight forward: the shared backbone once,
  then each of the H heads' blocks and LM head (with sparsity, only the nonzero weights count);
- attention scores and the weighted sum of values cost 2 * 2 * hidden * context FLOPs per block forward,
  counted over the whole context (no causal halving, the usual convention: PaLM, Chinchilla);
- training is forward + backward = 3 x forward (the backward computes gradients of inputs and weights).
Not counted: embedding lookups, norms, activations, softmax, rotary, the loss and the optimizer.
"""

import functools
import time

import torch
from torch import nn

from nt_llm.modeling.configuration_neurotrails import NeuroTrailsConfig


def block_linear_weights(config: NeuroTrailsConfig) -> int:
    """Weights of the linear layers of one decoder block: q, k, v, o projections and the gated MLP."""
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_and_o = 2 * hidden * config.num_attention_heads * head_dim
    k_and_v = 2 * hidden * config.num_key_value_heads * head_dim
    return q_and_o + k_and_v + 3 * hidden * config.intermediate_size


def blocks_on_paths(config: NeuroTrailsConfig) -> int:
    """Decoder blocks a token passes through: the backbone once plus every head's blocks."""
    return config.num_shared_layers + config.ensemble_size * config.head_layers


def linear_weights(config: NeuroTrailsConfig, head_density: float = 1.0) -> float:
    """Linear weights a token passes through; ``head_density`` scales the heads' blocks and LM heads (the
    tensors DST keeps sparse by default), the backbone stays dense."""
    if not 0.0 < head_density <= 1.0:
        raise ValueError(f"head_density must be in (0, 1], got {head_density}")
    backbone = config.num_shared_layers * block_linear_weights(config)
    one_head = config.head_layers * block_linear_weights(config) + config.hidden_size * config.vocab_size
    return backbone + head_density * config.ensemble_size * one_head


def model_linear_weights(model: nn.Module, nonzero: bool = True) -> int:
    """Linear weights of a built model (each ``nn.Linear`` of a NeuroTrails model is on exactly one path,
    used once per token); ``nonzero`` counts only weights a sparse mask kept."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            weight = module.weight.detach()
            total += int(torch.count_nonzero(weight)) if nonzero else weight.numel()
    return total


def attention_flops_per_token(config: NeuroTrailsConfig, context: int) -> int:
    """Forward FLOPs of attention scores and value mixing per token, over ``context`` positions."""
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width = config.num_attention_heads * head_dim
    return 2 * 2 * width * context * blocks_on_paths(config)


def forward_flops_per_token(config: NeuroTrailsConfig, context: int, weights: float | None = None) -> float:
    """Forward FLOPs per token; ``weights`` overrides the dense count of linear weights (e.g. the nonzero
    count of a sparse model from ``model_linear_weights``)."""
    if weights is None:
        weights = linear_weights(config)
    return 2 * weights + attention_flops_per_token(config, context)


def training_flops_per_token(config: NeuroTrailsConfig, context: int, weights: float | None = None) -> float:
    """Forward + backward FLOPs per token (3 x forward)."""
    return 3 * forward_flops_per_token(config, context, weights)


@functools.cache
def matmul_peak_flops(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 10) -> float:
    """Measured FLOP/s of an ``n`` x ``n`` matmul on ``device`` in ``dtype``: the denominator of MFU (a datasheet
    peak is rarely reached; this is what the chip sustains here). Cached per process: about a second on a GPU."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up: kernel selection, clocks
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    _synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
