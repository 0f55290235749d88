"""Two gloo processes: a tiny NeuroTrails model under FSDP2 (every decoder block and the root sharded) trains one
step exactly as one process does on the whole batch. Rank 0 writes a summary to the JSON path in argv[1]."""

import copy
import json
import math
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM

ROWS = 2  # sequences per rank


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = NeuroTrailsConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        ensemble_size=3,
        head_layers=2,
    )
    reference = NeuroTrailsForCausalLM(config).train()
    model = copy.deepcopy(reference)
    mesh = init_device_mesh("cpu", (world,))
    for module in model.modules():
        if isinstance(module, LlamaDecoderLayer):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)

    ids = torch.randint(0, config.vocab_size, (ROWS * world, 10), generator=torch.Generator().manual_seed(1))
    mine = ids[rank * ROWS : (rank + 1) * ROWS]
    # FSDP2 averages gradients over ranks: the reference is the mean of the ranks' losses.
    model(mine, labels=mine, use_cache=False, return_logits=False, loss_chunk_size=4).loss.backward()
    parts = [ids[r * ROWS : (r + 1) * ROWS] for r in range(world)]
    torch.stack([reference(p, labels=p, use_cache=False, return_logits=False).loss for p in parts]).mean().backward()

    reference_grads = dict(reference.named_parameters())
    worst = 0.0
    for name, param in model.named_parameters():
        grad = param.grad.full_tensor()  # a collective: every rank, same order
        difference = (grad - reference_grads[name].grad).abs().max().item()
        # max() would drop a NaN (max(0.0, nan) is 0.0): a non-finite difference counts as infinite
        worst = max(worst, difference if math.isfinite(difference) else math.inf)
    if rank == 0:
        summary = {"world_size": world, "parameters": len(reference_grads), "max_grad_difference": worst}
        with open(sys.argv[1], "w", encoding="utf-8") as handle:
            json.dump(summary, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
