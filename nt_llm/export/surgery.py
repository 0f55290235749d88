"""Head surgery on a NeuroTrails state dict: the weights of a model folder, k of its H heads (renumbered), one head
with the backbone as a plain LlamaForCausalLM, a dtype cast, and the parameter counts the model card states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from nt_llm.export.options import ExportError, ExportOptions
from nt_llm.model_card import ParamCounts
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM
from nt_llm.modeling.convert import head_to_llama


def load_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of a model folder (single or sharded safetensors)."""
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (model_dir / shard).is_file():
                raise ExportError(f"{index} lists {shard}, which is missing")
            state.update(load_file(model_dir / shard))
        return state
    raise ExportError(f"{model_dir} holds no model.safetensors (or sharded index)")


def select_heads(
    state: dict[str, torch.Tensor], config: NeuroTrailsConfig, heads: tuple[int, ...]
) -> tuple[dict[str, torch.Tensor], NeuroTrailsConfig]:
    """The state dict and config of a NeuroTrails model made of `heads` (renumbered 0..k-1) and the shared parts."""
    check_heads(heads, config.ensemble_size, "heads")
    renumber = {f"heads.{old}.": f"heads.{new}." for new, old in enumerate(heads)}
    selected: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not name.startswith("heads."):
            selected[name] = tensor
            continue
        prefix = ".".join(name.split(".")[:2]) + "."
        if prefix in renumber:
            selected[renumber[prefix] + name[len(prefix) :]] = tensor
    subset = NeuroTrailsConfig.from_dict({**config.to_dict(), "ensemble_size": len(heads)})
    return selected, subset


def count_params(state: dict[str, torch.Tensor], heads: tuple[int, ...]) -> ParamCounts:
    """Totals and nonzeros, overall, for the parts outside the heads, and per head (keyed by source head)."""
    per_head = {h: [0, 0] for h in heads}
    shared = [0, 0]
    for name, tensor in state.items():
        numel, nonzero = tensor.numel(), int(torch.count_nonzero(tensor))
        if name.startswith("heads."):
            bucket = per_head[heads[int(name.split(".")[1])]]
        else:
            bucket = shared
        bucket[0] += numel
        bucket[1] += nonzero
    total = shared[0] + sum(t for t, _ in per_head.values())
    nonzero = shared[1] + sum(n for _, n in per_head.values())
    return ParamCounts(
        total=total,
        nonzero=nonzero,
        shared=shared[0],
        shared_nonzero=shared[1],
        heads={h: (t, n) for h, (t, n) in per_head.items()},
    )


def check_heads(heads: tuple[int, ...], ensemble_size: int, option: str) -> None:
    """ExportError naming `option` when a head index is outside the model's `ensemble_size` heads."""
    bad = [h for h in heads if not 0 <= h < ensemble_size]
    if bad:
        raise ExportError(f"{option} {bad} out of range: the model has {ensemble_size} heads (0..{ensemble_size - 1})")


def cast_state(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`state` with its floating-point tensors in `dtype` (integer buffers, if any, as they are)."""
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}


def export_model(
    state: dict[str, torch.Tensor], config: NeuroTrailsConfig, options: ExportOptions
) -> tuple[tuple[int, ...], dict[str, torch.Tensor], torch.nn.Module]:
    """(the source's heads kept, the state dict of what is kept, the model to save)."""
    if options.single_head is not None:
        heads = (options.single_head,)
        sub_state, sub_config = select_heads(state, config, heads)
        return (
            heads,
            sub_state,
            _build(LlamaForCausalLM, sub_config.to_llama_config(), head_to_llama(sub_state, sub_config, 0)),
        )
    heads = options.heads if options.heads is not None else tuple(range(config.ensemble_size))
    sub_state, sub_config = select_heads(state, config, heads)
    return heads, sub_state, _build(NeuroTrailsForCausalLM, sub_config, sub_state)


def _build(model_class: type, config: Any, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A model holding exactly `state`, without spending time and memory on a random initialisation."""
    with torch.device("meta"):
        model = model_class(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model
