"""Weight mapping between a NeuroTrails model and plain ``LlamaForCausalLM`` state dicts.

One head plus the shared parts is exactly a LLaMA: ``head_to_llama`` exports it (for comparisons, or a model
that needs no custom code), ``llama_to_neurotrails`` starts every head from one LLaMA checkpoint.
"""

import torch

from nt_llm.modeling.configuration_neurotrails import NeuroTrailsConfig


def llama_names(config: NeuroTrailsConfig, head: int) -> dict[str, str]:
    """``{LlamaForCausalLM parameter name: NeuroTrails parameter name}`` for the path through ``head``."""
    if not 0 <= head < config.ensemble_size:
        raise ValueError(f"head must be in [0, {config.ensemble_size}), got {head}")
    block_params = [
        f"{module}.{proj}.weight"
        for module, projs in (("self_attn", "qkvo"), ("mlp", ("gate", "up", "down")))
        for proj in (f"{p}_proj" for p in projs)
    ] + ["input_layernorm.weight", "post_attention_layernorm.weight"]
    if config.attention_bias:
        block_params += [f"self_attn.{p}_proj.bias" for p in "qkvo"]
    if config.mlp_bias:
        block_params += [f"mlp.{p}_proj.bias" for p in ("gate", "up", "down")]

    prefix = f"heads.{head}"
    names = {
        "model.embed_tokens.weight": "embed_tokens.weight"
        if config.share_embeddings
        else f"{prefix}.embed_tokens.weight",
        "model.norm.weight": f"{prefix}.norm.weight",
        "lm_head.weight": f"{prefix}.lm_head.weight",
    }
    shared = config.num_shared_layers
    for layer in range(config.num_hidden_layers):
        target = f"backbone.{layer}" if layer < shared else f"{prefix}.layers.{layer - shared}"
        names.update({f"model.layers.{layer}.{p}": f"{target}.{p}" for p in block_params})
    return names


def head_to_llama(state_dict: dict[str, torch.Tensor], config: NeuroTrailsConfig, head: int) -> dict[str, torch.Tensor]:
    """The ``LlamaForCausalLM`` state dict of the path through ``head``."""
    return {llama: state_dict[ours] for llama, ours in llama_names(config, head).items()}


def llama_to_neurotrails(
    state_dict: dict[str, torch.Tensor], config: NeuroTrailsConfig, clone: bool = True
) -> dict[str, torch.Tensor]:
    """A NeuroTrails state dict whose every head starts as the given ``LlamaForCausalLM`` weights: the shared
    blocks from its lower layers, each head's blocks, final norm and LM head from its upper ones (a full ensemble:
    every head a whole copy, its own embedding included).

    ``clone=False`` returns the LLaMA's tensors themselves, H times over: for ``load_state_dict``, which copies them
    into the model's own parameters, so no H copies exist besides the model's.
    """
    ours: dict[str, torch.Tensor] = {}
    for head in range(config.ensemble_size):
        for llama, name in llama_names(config, head).items():
            if llama not in state_dict:
                raise KeyError(f"LLaMA state dict has no {llama!r} (is it a LlamaForCausalLM of the same shape?)")
            if name not in ours:  # the shared parts map from every head's path: taken once
                ours[name] = state_dict[llama].clone() if clone else state_dict[llama]
    return ours
